"""Zarr store of a run's attribution maps, filled shard by shard (sample ranges).

Layout::

    RUN_DIR/attribution.zarr/
      zarr.json            attrs["deepprofile"]: format, identity (settings), hash, shards
      images               (N, C, H, W) float32: the explained images (written at creation)
      dataset_indices, labels          (N,) int64 (written at creation)
      targets, predictions             (N,) int64: the model's predictions (the targets)
      maps/<key>           (N, *map shape) float32, one chunk = one shard
      variance/<key>       (N, *map shape) float32, for the SDE-smoothed maps
      convergence_delta    (N,) float32: IG completeness delta (IG base method only)
      sigma0_equal         (N,) uint8: SDE at sigma 0 reproduced the plain map exactly
      boundary/<field>     (N,) per-image BIG search (found, eps, norm, distance, classes)
      shards/<i>           attrs: "meta" (how shard i's maps were made: method parameters)
                           and "digests" (CRC32 of each of its blocks, checked on reading)
      shards_done          (n_shards,) uint8, one file per shard: 1 once committed
      sets/<name>/         map sets, sharded the same way: the noisy fine-tuned model's
                           maps, the mapper nodes' maps (:mod:`deepprofile.attribution.mapsets`)
      extra/<name>         arrays made by the command's process (the mean map per mapper node)

A shard's flag is set only after its rows and meta are written, so a killed run resumes
with the pending shards and a finished shard is never recomputed. The settings that
shape the maps (weights, images, methods, steps, draws, seeds, memory budget, device,
shard size) form the store's identity: a run with other settings replaces the store
instead of mixing shards. A new store is built under a temporary name and renamed into
place (see :mod:`deepprofile.capture.store` for the same scheme).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from deepprofile.errors import CorruptStoreError, DeepProfileError
from deepprofile.testhooks import kill_point

FORMAT_VERSION = 1
STORE_NAME = "attribution.zarr"
#: Folder of the map sets inside the store (:mod:`deepprofile.attribution.mapsets`).
SETS = "sets"
_META = "deepprofile"
#: Per-image fields of BIG's boundary search: name -> dtype.
BOUNDARY_FIELDS = {"found": "uint8", "eps": "float64", "norm": "int8", "distance": "float64",
                   "original": "int64", "adversarial": "int64"}
NORMS = (None, "L2", "Linf")
_INT_SIDE = ("targets", "predictions")


def _digest(block: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(block).tobytes()) & 0xFFFFFFFF


def safe_key(key: str) -> str:
    """A map key (``sde_ig:0.1``, ``gradcam:layer3.1``) as an array name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


def canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as plain JSON types, so a stored and a new identity compare equal."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def identity_hash(identity: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical identity."""
    text = json.dumps(canonical(identity), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def store_lock(path: str | Path):
    """The exclusive lock of the map store at ``path`` (fails at once if held)."""
    from deepprofile.locking import file_lock

    path = Path(path)
    return file_lock(path.parent / f".{path.name}.lock", what=f"The attribution maps {path}")


def _damaged(path: Path, what: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"The attribution maps at {path} are damaged ({what}); run `deepprofile attribute` "
        "again (it rebuilds them).")



def reuse_matching(path: Path, identity: Mapping[str, Any], open_existing: Any) -> Any:
    """The store (or map set) at ``path`` when ``open_existing()`` finds it made with
    ``identity``: its damaged shards are flagged for the caller to recompute (damaged
    images make it unusable). Anything else there (other settings, damage) is deleted and
    ``None`` returned, so shards of other settings are never mixed with new ones."""
    from deepprofile.capture.store import remove_store

    if not path.exists():
        return None
    try:
        old = open_existing()
        if old.identity == identity:
            for name in old.meta["digests"]:
                old.read(name, complete=False)  # damaged images: build anew
            for shard in old.damaged_shards():
                old._group["shards_done"][shard] = 0  # recomputed by the caller
            return old
    except DeepProfileError:
        pass
    remove_store(path)
    return None

def new_sharded_group(path: Path, shard_size: int) -> tuple[Path, zarr.Group, Any]:
    """A fresh Zarr group under the temporary name of ``path`` (renamed into place by the
    caller once complete) and ``array(name, shape, dtype, fill)``, which makes arrays
    chunked by shard along the first axis, Zstandard-compressed with checksums."""
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w")
    comp = ZstdCodec(level=1, checksum=True)

    def array(name: str, shape: tuple[int, ...], dtype: str, fill: Any) -> zarr.Array:
        return group.create_array(name, shape=shape, chunks=(shard_size, *shape[1:]),
                                  dtype=dtype, fill_value=fill, compressors=comp)

    return tmp, group, array


class _Sharded:
    """Shard bookkeeping shared by :class:`MapStore` and its :class:`~deepprofile.
    attribution.mapsets.MapSet` s: flags, bounds, per-shard checksums, checked reads."""

    _shard_point = "attribution-shard"

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self._group = group

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._group.attrs[_META])

    @property
    def identity(self) -> dict[str, Any]:
        return self.meta["identity"]

    @property
    def hash(self) -> str:
        return str(self.meta["hash"])

    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @property
    def shard_size(self) -> int:
        return int(self.meta["shard_size"])

    @property
    def n_shards(self) -> int:
        return int(self.meta["n_shards"])

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n_images)

    def pending_shards(self) -> list[int]:
        try:
            flags = np.asarray(self._group["shards_done"][...])
        except Exception as exc:  # noqa: BLE001 - any storage error is damage
            raise _damaged(self.path, f"shards_done: {type(exc).__name__}: {exc}") from exc
        return np.flatnonzero(flags == 0).tolist()

    @property
    def is_complete(self) -> bool:
        return not self.pending_shards()

    def _commit(self, shard: int, blocks: Sequence[tuple[str, Any, Any]],
                meta: Mapping[str, Any]) -> None:
        """Write ``(array name, rows, dtype)`` blocks of shard ``shard`` with their CRC32
        and ``meta``, then its flag (last: a flagged shard is always whole)."""
        start, stop = self.shard_bounds(shard)
        g = self._group
        digests: dict[str, int] = {}
        for name, block, dtype in blocks:
            block = np.asarray(block, dtype)
            want = (stop - start, *g[name].shape[1:])
            if block.shape != want:
                raise DeepProfileError(
                    f"Shard {shard}: {name} has shape {block.shape}, the store expects {want}.")
            g[name][start:stop] = block
            digests[name] = _digest(block)
        g[f"shards/{shard}"].attrs.update({"meta": canonical(meta), "digests": digests})
        g["shards_done"][shard] = 1
        kill_point(self._shard_point)

    def _require_complete(self) -> None:
        pending = self.pending_shards()
        if pending:
            raise CorruptStoreError(
                f"The attribution maps at {self.path} are incomplete ({len(pending)} of "
                f"{self.n_shards} shards pending); run `deepprofile attribute` again to "
                "resume.")

    def damaged_shards(self) -> list[int]:
        """Shards flagged done whose rows no longer match their checksums (or unreadable)."""
        pending = set(self.pending_shards())
        bad = []
        for shard in (i for i in range(self.n_shards) if i not in pending):
            start, stop = self.shard_bounds(shard)
            try:
                digests = self._group[f"shards/{shard}"].attrs["digests"]
                ok = all(_digest(self._group[name][start:stop]) == value
                         for name, value in digests.items())
            except Exception:  # noqa: BLE001 - unreadable is damaged
                ok = False
            if not ok:
                bad.append(shard)
        return bad

    def read(self, name: str, *, complete: bool = True) -> np.ndarray:
        """A whole array of a finished store (``maps/<key>``, ``targets``, ...), checked
        against the CRC32 recorded for each shard (or at creation for the images)."""
        if complete:
            self._require_complete()
        try:
            data = self._group[name][...]
            if name in self.meta.get("digests", {}):
                wanted = [(0, len(data), self.meta["digests"][name])]
            elif name.startswith("extra/"):  # one chunk, its CRC32 in its attributes
                digest = self._group[name].attrs.get("crc32")  # (absent in older stores)
                wanted = [] if digest is None else [(None, None, digest)]
            else:
                wanted = [(*self.shard_bounds(i),
                           self._group[f"shards/{i}"].attrs["digests"][name])
                          for i in range(self.n_shards)]
        except Exception as exc:  # noqa: BLE001 - any storage error is damage
            raise _damaged(self.path, f"{name}: {type(exc).__name__}: {exc}") from exc
        for start, stop, digest in wanted:
            if _digest(data[start:stop] if start is not None else data) != digest:
                rows = "" if start is None else f" rows {start}-{stop - 1}"
                raise _damaged(self.path, f"{name}{rows} do not match their checksum")
        return data

    def map_array(self, key: str, variance: bool = False) -> np.ndarray:
        where = self.meta["maps"].get(key)
        if where is None or (variance and not where["variance"]):
            raise CorruptStoreError(f"The attribution maps at {self.path} hold no "
                                    f"{'variance of ' if variance else ''}map {key!r}.")
        return self.read(where["variance" if variance else "array"])

    def shard_meta(self) -> dict[str, Any]:
        """How the maps were made (the same for every shard; read from shard 0)."""
        self._require_complete()
        return dict(self._group["shards/0"].attrs["meta"])


class MapStore(_Sharded):
    """The attribution maps of one run (see the module docstring for the layout)."""

    # -- construction --------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> MapStore:
        """Open an existing store; a missing or unreadable one is a one-line error."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise CorruptStoreError(
                f"No attribution maps at {path}; run `deepprofile attribute` on the run.")
        try:
            group = zarr.open_group(str(path), mode="r+")
            meta = group.attrs.get(_META)
        except Exception as exc:  # noqa: BLE001 - any storage error is damage
            raise _damaged(path, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise _damaged(path, "no deepprofile metadata of format "
                                 f"{FORMAT_VERSION}")
        return cls(path, group)

    @classmethod
    def open_or_create(
        cls, path: str | Path, identity: Mapping[str, Any], *, images: np.ndarray,
        dataset_indices: np.ndarray, labels: np.ndarray, shard_size: int,
        map_shapes: Mapping[str, Sequence[int]], variance_keys: Sequence[str],
        convergence_delta: bool, boundary: bool,
    ) -> MapStore:
        """The store at ``path`` when it was made with ``identity``; else a new one.

        A store with another identity (or a damaged one) is replaced: its shards were
        computed with other settings and are never mixed with new ones.
        """
        from deepprofile.capture.store import clean_leftovers

        path = Path(path)
        clean_leftovers(path)
        identity = canonical(identity)
        old = reuse_matching(path, identity, lambda: cls.open(path))
        if old is not None:
            return old
        n = len(images)
        n_shards = -(-n // shard_size)
        tmp, group, array = new_sharded_group(path, shard_size)

        array("images", tuple(images.shape), "float32", np.nan)[...] = images.astype(np.float32)
        array("dataset_indices", (n,), "int64", -1)[...] = np.asarray(dataset_indices, np.int64)
        array("labels", (n,), "int64", -1)[...] = np.asarray(labels, np.int64)
        for name in _INT_SIDE:
            array(name, (n,), "int64", -1)
        array("sigma0_equal", (n,), "uint8", 0)
        if convergence_delta:
            array("convergence_delta", (n,), "float32", np.nan)
        for key, shape in map_shapes.items():
            array(f"maps/{safe_key(key)}", (n, *shape), "float32", np.nan)
            if key in variance_keys:
                array(f"variance/{safe_key(key)}", (n, *shape), "float32", np.nan)
        if boundary:
            for name, dtype in BOUNDARY_FIELDS.items():
                array(f"boundary/{name}", (n,), dtype, 0 if "int" in dtype else np.nan)
        for i in range(n_shards):
            group.create_group(f"shards/{i}")
        group.create_array("shards_done", shape=(n_shards,), chunks=(1,), dtype="uint8",
                           fill_value=0)
        group.attrs[_META] = {  # last: a store without it is never trusted
            "format": FORMAT_VERSION, "identity": identity, "hash": identity_hash(identity),
            "digests": {name: _digest(group[name][...])
                        for name in ("images", "dataset_indices", "labels")},
            "n_images": n, "shard_size": shard_size, "n_shards": n_shards,
            "maps": {key: {"array": f"maps/{safe_key(key)}",
                           "variance": (f"variance/{safe_key(key)}" if key in variance_keys
                                        else None)}
                     for key in map_shapes},
            "convergence_delta": convergence_delta, "boundary": boundary,
        }
        kill_point("attribution-store-created")
        os.rename(tmp, path)
        return cls.open(path)

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._group["images"][start:stop]

    # -- writing one shard ---------------------------------------------------------------
    def write_shard(self, shard: int, out: Mapping[str, Any]) -> None:
        """Write shard ``shard``'s rows (see :func:`deepprofile.attribution.shards.
        compute_shard` for ``out``), its meta and the CRC32 of every block, then its flag."""
        meta = self.meta
        blocks: list[tuple[str, Any, Any]] = [(name, out[name], np.int64) for name in _INT_SIDE]
        blocks.append(("sigma0_equal", out["sigma0_equal"], np.uint8))
        if meta["convergence_delta"]:
            blocks.append(("convergence_delta", out["convergence_delta"], np.float32))
        for key, where in meta["maps"].items():
            blocks.append((where["array"], out["maps"][key], np.float32))
            if where["variance"]:
                blocks.append((where["variance"], out["variance"][key], np.float32))
        if meta["boundary"]:
            blocks += [(f"boundary/{name}", out["boundary"][name], dtype)
                       for name, dtype in BOUNDARY_FIELDS.items()]
        self._commit(shard, blocks, out["meta"])

    # -- reading ---------------------------------------------------------------------------
    def read(self, name: str, *, complete: bool = True) -> np.ndarray:
        """As :meth:`_Sharded.read`; ``sets/<name>/<array>`` reads a map set's array."""
        if name.startswith(f"{SETS}/"):
            _, set_name, rest = name.split("/", 2)
            return self.map_set(set_name).read(rest, complete=complete)
        return super().read(name, complete=complete)

    def map_array(self, key: str, variance: bool = False) -> np.ndarray:
        """The map ``key`` (or its variance), from the store or from the map set holding it."""
        if key not in self.meta["maps"]:
            for mset in self.map_sets():
                if key in mset.meta["maps"]:
                    return mset.map_array(key, variance=variance)
        return super().map_array(key, variance=variance)

    # -- map sets (maps of other images or of another model, sharded the same way) ---------
    def map_set(self, name: str):
        """The finished-or-not map set ``name`` (:class:`~deepprofile.attribution.mapsets.
        MapSet`); a missing one is a one-line error."""
        from deepprofile.attribution.mapsets import MapSet

        return MapSet.open(self, name)

    def map_sets(self) -> list:
        """Every map set of the store, by name."""
        from deepprofile.attribution.mapsets import MapSet

        root = self.path / SETS
        if not root.is_dir():
            return []
        return [MapSet.open(self, p.name) for p in sorted(root.iterdir())
                if not p.name.startswith(".") and (p / "zarr.json").is_file()]

    def boundary(self) -> dict[str, np.ndarray]:
        return {name: self.read(f"boundary/{name}") for name in BOUNDARY_FIELDS}

    # -- arrays computed by the command's process -------------------------------------------
    def write_extra(self, name: str, data: np.ndarray) -> str:
        """Store an array made outside the shards (replacing an earlier one); its path."""
        where = f"extra/{safe_key(name)}"
        if where in self._group:
            del self._group[where]
        data = np.asarray(data, np.float32)
        arr = self._group.create_array(where, shape=data.shape, dtype="float32",
                                       chunks=data.shape or (1,),
                                       compressors=ZstdCodec(level=1, checksum=True))
        arr[...] = data
        arr.attrs["crc32"] = _digest(data)  # checked by read(): a lost chunk reads as zeros
        return where


def _load_npy(path: Path) -> np.ndarray:
    """An array file of an older run; missing or unreadable is a one-line error."""
    if not path.is_file():
        raise CorruptStoreError(f"{path} is missing; run `deepprofile attribute` again.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptStoreError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); run `deepprofile attribute` "
            "again.") from exc


def read_map(run_dir: str | Path, result: Mapping[str, Any], key: str, *,
             variance: bool = False) -> np.ndarray:
    """The map ``key`` (or its variance) of ``results/attribution.json`` as written.

    Reads the Zarr store; runs written by an older deepprofile (one ``.npy`` per method)
    are still read from their files.
    """
    run = Path(run_dir)
    entry = (result.get("methods") or {}).get(key)
    if entry is None:
        raise DeepProfileError(f"results/attribution.json has no map {key!r}.")
    legacy = entry.get("variance_file" if variance else "file")
    if legacy:
        return _load_npy(run / legacy)
    store = open_result_store(run, result)
    where = entry.get("variance_array" if variance else "array")
    if where:
        _check_set(store, result, where)
    return store.map_array(key, variance=variance)


def read_array(run_dir: str | Path, result: Mapping[str, Any], where: str) -> np.ndarray:
    """An array named in the result (``files["images"]``, ``nodes["array"]``) of either
    layout: a ``.npy`` path (older runs) or a path inside the map store."""
    run = Path(run_dir)
    if where.endswith(".npy"):
        return _load_npy(run / where)
    store = open_result_store(run, result)
    _check_set(store, result, where)
    return store.read(where)


def _check_set(store: MapStore, result: Mapping[str, Any], where: str) -> None:
    """A map set's array (``sets/<name>/...``) must come from the set the result was
    computed with (a later run with other fine-tuning or nodes replaces the set)."""
    if not where.startswith(f"{SETS}/"):
        return
    name = where.split("/")[1]
    want = ((result.get("files") or {}).get("map_sets") or {}).get(name)
    if want and store.map_set(name).hash != want:
        raise CorruptStoreError(
            f"The map set {name!r} in {store.path} was made with other settings than "
            "results/attribution.json (a later run?); run `deepprofile attribute` again.")


def open_result_store(run_dir: str | Path, result: Mapping[str, Any]) -> MapStore:
    """The map store of ``result``, checked to be the one the result was computed from."""
    files = result.get("files") or {}
    store = MapStore.open(Path(run_dir) / files.get("store", STORE_NAME))
    want = files.get("maps_hash")
    if want and store.hash != want:
        raise CorruptStoreError(
            f"The attribution maps at {store.path} were made with other settings than "
            "results/attribution.json (an interrupted later run?); run `deepprofile "
            "attribute` again.")
    return store
