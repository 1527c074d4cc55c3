"""ActivationStore: captured activations on disk (Zarr v3), chunked along samples.

Layout of a store directory::

    store.zarr/
      zarr.json                 attrs["deepprofile"]: config, layers, progress, provenance
      layers/<module path>      (N, *reduced shape) float32, one chunk = ``chunk_size`` samples
      labels, predictions, indices   (N,) int64
      logits                    (N, num_classes) float32
      commits                   (n_chunks, K + 1) uint32, one file per chunk: the CRC32 of
                                the chunk in each of the K arrays above (in
                                ``array_keys()`` order), then 1 once the chunk is committed

Writes stream chunk by chunk; a chunk's commit record (its digests and done flag, one
file written atomically) is written only after its arrays are on disk, so an
interrupted capture resumes with the chunks not yet done and ends with the same arrays
as an uninterrupted one. Chunks are independent (records live in separate files), so
several workers may fill different chunks of one store at once (see
:mod:`deepprofile.distributed`).

Store format 2 (this layout) writes one file per array and chunk plus one commit
record, where format 1 wrote a digest file per array and a separate flag (17 files per
chunk of a 4-layer store instead of 9, and 26 arrays to create instead of 10). Format 1
stores stay readable (``digests/<array key>`` and ``chunks_done``), and their
fingerprints are computed the same way; an unfinished format 1 store is not resumed.
Reads check completeness and digests, so a truncated or
damaged store raises :class:`~deepprofile.errors.CorruptStoreError` instead of
returning fill values; so does any damage to the store's format (unreadable
flags or digests, edited attributes, arrays whose shape disagrees with the
metadata).

Crash safety: a new store is built under a temporary name
(``.<name>.creating-<pid>``) and renamed into place once its metadata is
complete, and ``overwrite`` renames the old store aside
(``.<name>.removing-<pid>``) before deleting it, so a process killed at any
point leaves either no store or a complete, resumable one; leftovers of dead
processes are deleted by the next :meth:`ActivationStore.create`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from deepprofile.errors import (
    CorruptStoreError,
    DeepProfileError,
    MissingFileError,
    StoreMismatchError,
    UnknownLayerError,
)
from deepprofile.locking import pid_alive
from deepprofile.testhooks import kill_point

FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)
_COMMITS = "commits"
_META = "deepprofile"
_SIDE_ARRAYS = ("labels", "predictions", "indices", "logits")
_CAPTURE_METADATA = ("model", "weights_hash", "dataset", "class_names")  # written by capture


def _digest(block: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(block).tobytes()) & 0xFFFFFFFF


def _finite_sum(block: np.ndarray) -> bool:
    """Whether ``block`` sums to a finite number (one pass, no temporary array): false for
    any NaN/inf, and for finite values whose float32 sum overflows."""
    return block.dtype.kind != "f" or bool(np.isfinite(block.sum()))


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain JSON types, so stored and new configs compare equal."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def _format_guard(path: Path, what: str) -> Iterator[None]:
    """Turn any error of the storage layer (Zarr, codecs, bad attributes) into a
    one-line :class:`CorruptStoreError`; deepprofile's own errors pass through."""
    try:
        yield
    except DeepProfileError:
        raise
    except Exception as exc:
        raise CorruptStoreError(
            f"The activation store at {path} is damaged ({what}: {_one_line(exc)}). "
            "Capture again with --overwrite."
        ) from exc


def _gather(path: Path, jobs: Sequence[tuple[str, Awaitable[Any]]]) -> list[Any]:
    """Run Zarr coroutines concurrently in one round trip to Zarr's event loop.

    Each job is ``(what, coroutine)``; the first failure raises like :func:`_format_guard`
    with its ``what`` (one Zarr call per array would pay the loop hand-off once each).
    """
    async def run() -> list[Any]:
        return await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)

    with _format_guard(path, "store"):
        results = sync(run())
    for (what, _), result in zip(jobs, results, strict=True):
        if isinstance(result, BaseException):
            with _format_guard(path, what):
                raise result
    return results


def _temp_name(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


def clean_leftovers(path: str | Path) -> list[Path]:
    """Delete temporary folders of ``path`` left by killed processes (creating/removing).

    Folders of a process that is still alive are kept. Returns what was deleted.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for kind in ("creating", "removing"):
        for tmp in path.parent.glob(f".{path.name}.{kind}-*"):
            try:
                pid = int(tmp.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid != os.getpid() and pid_alive(pid):
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def remove_store(path: str | Path) -> None:
    """Delete a store atomically: rename it aside, then delete the renamed folder."""
    path = Path(path)
    aside = _temp_name(path, "removing")
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(path, aside)
    kill_point("overwrite-removal")
    if aside.is_dir():
        shutil.rmtree(aside)
    else:  # a file where the store should be
        aside.unlink()


def _check_meta(meta: Any, path: Path) -> None:
    """Raise :class:`CorruptStoreError` unless the store attributes are well formed."""
    def bad(what: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"The activation store at {path} has damaged metadata ({what}). "
            "Capture again with --overwrite."
        )

    if not isinstance(meta, dict) or not meta:
        raise bad("empty or not an object")
    if meta.get("format") not in _READABLE_FORMATS:
        raise CorruptStoreError(
            f"Store {path} has format {meta.get('format')!r}; this deepprofile reads "
            f"formats {', '.join(map(str, _READABLE_FORMATS))}. Capture again with this version."
        )
    for key in ("n_samples", "num_classes", "chunk_size"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"{key} is {value!r}, not a positive integer")
    for key, kind in (("config", dict), ("layers", dict), ("layer_order", list),
                      ("metadata", dict)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"{key} is missing or not a {kind.__name__}")
    if sorted(meta["layer_order"]) != sorted(meta["layers"]):
        raise bad("layer_order does not match layers")
    for name, info in meta["layers"].items():
        ok = (isinstance(info, dict) and isinstance(info.get("reduction"), str)
              and all(isinstance(info.get(k), list) and all(isinstance(d, int) for d in info[k])
                      for k in ("stored_shape", "output_shape")))
        if not ok:
            raise bad(f"layer {name!r} has no valid reduction/stored_shape/output_shape")


class ActivationStore:
    """A Zarr-backed store of per-layer activations plus labels, logits and provenance.

    Create with :meth:`create` (or let :func:`deepprofile.capture.capture_to_store` do
    it); open for analysis with :meth:`open`.
    """

    def __init__(self, path: Path, group: zarr.Group, verify: bool = True) -> None:
        self.path = Path(path)
        self._group = group
        self.verify = verify
        self._verified: set[str] = set()
        self._layout_checked = False
        self._writable: dict[str, Any] = {}  # key -> zarr AsyncArray, opened once for writing
        self._complete_commits: np.ndarray | None = None  # a finished store's, read once
        # chunk id -> (digests, correct predictions) of the chunks this object wrote
        self._session: dict[int, tuple[np.ndarray, int]] = {}

    # -- construction ---------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        config: Mapping[str, Any],
        layer_shapes: Mapping[str, tuple[int, ...]],
        reductions: Mapping[str, str],
        output_shapes: Mapping[str, tuple[int, ...]],
        n_samples: int,
        num_classes: int,
        chunk_size: int = 256,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> ActivationStore:
        """Create a store, or reopen an unfinished one made with the same ``config``.

        A store made with a different ``config`` raises
        :class:`~deepprofile.errors.StoreMismatchError` unless ``overwrite``.
        """
        path = Path(path)
        config = _canonical({**config, "n_samples": n_samples, "chunk_size": chunk_size})
        clean_leftovers(path)
        if path.exists():
            if not overwrite:
                return cls.open_matching(path, config)
            remove_store(path)
        tmp = _temp_name(path, "creating")
        if tmp.exists():
            shutil.rmtree(tmp)
        group = zarr.open_group(str(tmp), mode="w")
        kill_point("store-created")
        compressor = ZstdCodec(level=1, checksum=True)
        n_chunks = -(-n_samples // chunk_size)
        root = group._async_group
        arrays: list[tuple[str, tuple[int, ...], str, Any]] = [
            (f"layers/{name}", tuple(shape), "float32", np.nan)
            for name, shape in layer_shapes.items()]
        arrays += [(key, (), "int64", -1) for key in ("labels", "predictions", "indices")]
        arrays.append(("logits", (num_classes,), "float32", np.nan))

        async def build() -> None:
            # the parent group first, then every array at once (one file each, concurrently)
            await root.create_group("layers")
            await asyncio.gather(
                root.create_array(_COMMITS, shape=(n_chunks, len(arrays) + 1),
                                  chunks=(1, len(arrays) + 1), dtype="uint32", fill_value=0,
                                  compressors=compressor),
                *(root.create_array(key, shape=(n_samples, *shape), chunks=(chunk_size, *shape),
                                    dtype=dtype, fill_value=fill, compressors=compressor)
                  for key, shape, dtype, fill in arrays))

        sync(build())
        group.attrs[_META] = {
            "format": FORMAT_VERSION,
            "config": config,
            "layers": {
                name: {
                    "reduction": str(reductions[name]),
                    "stored_shape": list(layer_shapes[name]),
                    "output_shape": list(output_shapes[name]),
                }
                for name in layer_shapes
            },
            "layer_order": list(layer_shapes),
            "n_samples": n_samples,
            "num_classes": num_classes,
            "chunk_size": chunk_size,
            "metadata": _canonical(metadata or {}),
        }
        kill_point("store-metadata")
        os.rename(tmp, path)
        store = cls.open(path)
        store._layout_checked = True  # made just now from this very metadata
        return store

    @classmethod
    def open_matching(cls, path: str | Path, config: Mapping[str, Any]) -> ActivationStore:
        """Open the existing store at ``path`` to resume it, if it was made with ``config``
        (including ``n_samples`` and ``chunk_size``); otherwise raise
        :class:`~deepprofile.errors.StoreMismatchError`. Needs no forward pass."""
        path = Path(path)
        store = cls.open(path, verify=False)
        diff = _config_diff(store.config, _canonical(config))
        if diff:
            raise StoreMismatchError(
                f"The store at {path} was made with a different configuration "
                f"({'; '.join(diff)}). Use another path, or overwrite it "
                "(--overwrite / overwrite=True)."
            )
        if store.format != FORMAT_VERSION and not store.is_complete:
            raise StoreMismatchError(
                f"The store at {path} is unfinished and was written by an older deepprofile "
                f"(store format {store.format}; this version writes format {FORMAT_VERSION}). "
                "Capture again with --overwrite."
            )
        return store

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> ActivationStore:
        """Open an existing store for reading; damaged or foreign folders raise clearly."""
        path = Path(path)
        if not path.exists():
            raise MissingFileError(
                f"No activation store at {path}. Run `deepprofile capture` to make one."
            )
        try:
            group = zarr.open_group(str(path), mode="r+")
            meta = group.attrs[_META]
        except KeyError as exc:
            raise CorruptStoreError(
                f"{path} is a Zarr group but not a deepprofile activation store (no metadata)."
            ) from exc
        except Exception as exc:  # zarr raises several types for unreadable metadata
            raise CorruptStoreError(
                f"Cannot read the activation store at {path}: {_one_line(exc)}. It is damaged "
                "or not a store; capture again with --overwrite."
            ) from exc
        _check_meta(meta, path)
        return cls(path, group, verify=verify)

    # -- metadata ---------------------------------------------------------------
    @property
    def _meta(self) -> dict[str, Any]:
        with _format_guard(self.path, "metadata"):
            return self._group.attrs[_META]

    @property
    def config(self) -> dict[str, Any]:
        return self._meta["config"]

    @property
    def format(self) -> int:
        """The store format (see the module docstring): 2 for stores written now."""
        return int(self._meta["format"])

    @property
    def metadata(self) -> dict[str, Any]:
        """Provenance: model, weights hash, dataset, class names, package versions."""
        return self._meta["metadata"]

    @property
    def layers(self) -> list[str]:
        return list(self._meta["layer_order"])

    @property
    def n_samples(self) -> int:
        return int(self._meta["n_samples"])

    @property
    def num_classes(self) -> int:
        return int(self._meta["num_classes"])

    @property
    def chunk_size(self) -> int:
        return int(self._meta["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def chunk_bounds(self, chunk_id: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of chunk ``chunk_id``."""
        start = chunk_id * self.chunk_size
        return start, min(start + self.chunk_size, self.n_samples)

    def done_chunks(self) -> np.ndarray:
        """Boolean flag per chunk: committed (arrays and digests written)."""
        flags = self._read_v1("chunks_done") if self.format == 1 else self._commits()[:, -1]
        if not np.isin(flags, (0, 1)).all():
            raise CorruptStoreError(
                f"The activation store at {self.path} is damaged (a chunk's done flag "
                "is neither 0 nor 1). Capture again with --overwrite.")
        return flags == 1

    def _commits(self) -> np.ndarray:
        """The commit records, ``(n_chunks, K + 1)``: digests per array key, then the flag.

        A finished store's records are read once per object (they no longer change)."""
        if self._complete_commits is not None:
            return self._complete_commits
        with _format_guard(self.path, _COMMITS):
            rows = self._group[_COMMITS][...]
        expected = (self.n_chunks, len(self.array_keys()) + 1)
        if rows.shape != expected:
            raise CorruptStoreError(
                f"The activation store at {self.path} is damaged ({_COMMITS} has shape "
                f"{rows.shape}, expected {expected}). Capture again with --overwrite.")
        if (rows[:, -1] == 1).all():
            self._complete_commits = rows
        return rows

    def _read_v1(self, key: str) -> np.ndarray:
        """A format 1 bookkeeping array (``chunks_done``, ``digests/<key>``), shape checked."""
        with _format_guard(self.path, key):
            data = self._group[key][...]
        if data.shape != (self.n_chunks,):
            raise CorruptStoreError(
                f"The activation store at {self.path} is damaged ({key} has shape "
                f"{data.shape}, expected ({self.n_chunks},)). Capture again with --overwrite.")
        return data

    def _digests(self, key: str) -> np.ndarray:
        if self.format == 1:
            return self._read_v1(f"digests/{key}")
        return self._commits()[:, self.array_keys().index(key)]

    def array_keys(self) -> list[str]:
        """Every data array of the store: layers first, then labels, predictions, ..."""
        return [f"layers/{name}" for name in self.layers] + list(_SIDE_ARRAYS)

    def _expected_shape(self, key: str) -> tuple[int, ...]:
        if key.startswith("layers/"):
            per = tuple(self._layer_meta(key[len("layers/"):])["stored_shape"])
        elif key == "logits":
            per = (self.num_classes,)
        else:
            per = ()
        return (self.n_samples, *per)

    def check_layout(self) -> None:
        """Check every array exists with the shape and chunking the metadata says.

        Cheap (array metadata only); an edited or deleted array raises
        :class:`~deepprofile.errors.CorruptStoreError`.
        """
        if self._layout_checked:
            return
        keys = self.array_keys()
        root = self._group._async_group
        found = _gather(self.path, [(f"array {key!r}", root.getitem(key)) for key in keys])
        for key, arr in zip(keys, found, strict=True):
            with _format_guard(self.path, f"array {key!r}"):
                shape, chunks = tuple(arr.shape), tuple(arr.chunks)
            expected = self._expected_shape(key)
            if shape != expected or chunks != (self.chunk_size, *expected[1:]):
                raise CorruptStoreError(
                    f"The activation store at {self.path} is damaged: array {key!r} has shape "
                    f"{shape} (chunks {chunks}), its metadata says {expected} (chunks "
                    f"{(self.chunk_size, *expected[1:])}). Capture again with --overwrite."
                )
        self._all_digests()
        self._layout_checked = True

    def _all_digests(self) -> dict[str, np.ndarray]:
        """The digests of every array, read in one round trip (shapes checked)."""
        keys = self.array_keys()
        if self.format != 1:
            rows = self._commits()
            return {key: rows[:, j] for j, key in enumerate(keys)}
        root = self._group._async_group

        async def read(key: str) -> np.ndarray:
            arr = await root.getitem(f"digests/{key}")
            return np.asarray(await arr.getitem(...))

        found = _gather(self.path, [(f"digests of {key!r}", read(key)) for key in keys])
        for key, digests in zip(keys, found, strict=True):
            if digests.shape != (self.n_chunks,):
                raise CorruptStoreError(
                    f"The activation store at {self.path} is damaged (digests of {key!r} have "
                    f"shape {digests.shape}, expected ({self.n_chunks},)). Capture again with "
                    "--overwrite."
                )
        return dict(zip(keys, found, strict=True))

    def verify_all(self, chunk_ids: Iterable[int] | None = None) -> None:
        """Read every array chunk by chunk and check it against its digest.

        ``chunk_ids`` limits the check (e.g. to the committed chunks of an unfinished
        store). Any missing, altered or unreadable chunk raises
        :class:`~deepprofile.errors.CorruptStoreError`; memory stays one chunk.
        """
        self.check_layout()
        ids = np.flatnonzero(self.done_chunks()) if chunk_ids is None else list(chunk_ids)
        if not len(ids):
            return
        for key, digests in self._all_digests().items():
            for chunk_id in ids:
                start, stop = self.chunk_bounds(int(chunk_id))
                with _format_guard(self.path, f"chunk {chunk_id} of {key!r}"):
                    block = self._group[key][start:stop]
                if _digest(block) != int(digests[chunk_id]):
                    raise CorruptStoreError(
                        f"Chunk {chunk_id} of {key!r} in {self.path} does not match its "
                        "checksum (missing or altered file). Capture again with --overwrite."
                    )

    def fingerprint(self) -> str:
        """A content identity of the finished store: its configuration and every digest.

        Equal for byte-identical captures (an interrupted one resumed, or the same
        capture repeated), different as soon as any stored chunk differs.
        """
        saved = self.metadata.get("fingerprint")
        if isinstance(saved, str) and saved:
            return saved
        return self._compute_fingerprint()

    def _compute_fingerprint(self) -> str:
        return self._fingerprint_of(self._all_digests())

    def _fingerprint_of(self, all_digests: Mapping[str, np.ndarray]) -> str:
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for key, digests in all_digests.items():
            h.update(key.encode())
            h.update(digests.astype("<u4").tobytes())
        return h.hexdigest()[:16]

    @property
    def identity(self) -> dict[str, Any]:
        """What results record to say which store they were computed from."""
        return {
            "store": self.path.name,
            "weights_hash": self.metadata.get("weights_hash"),
            "fingerprint": self.fingerprint() if self.is_complete else None,
        }

    def check_provenance(self) -> None:
        """Raise :class:`CorruptStoreError` unless the provenance a capture records is there
        (model, weights hash, dataset, class names); called before a capture trusts a store."""
        missing = [k for k in _CAPTURE_METADATA if k not in self.metadata]
        if missing:
            raise CorruptStoreError(
                f"The activation store at {self.path} has damaged metadata (provenance lacks "
                f"{', '.join(missing)}). Capture again with --overwrite."
            )

    def finalize(self) -> None:
        """Record accuracy and fingerprint once every chunk is committed.

        Reads the digests, predictions and labels once, concurrently; the side arrays are
        checked against their digests like any read. When this object wrote every chunk
        itself (a capture in one process), the digests and the number of correct
        predictions it kept while writing are used instead: nothing is read back.
        """
        if len(self._session) == self.n_chunks:
            ids = range(self.n_chunks)
            rows = np.stack([self._session[i][0] for i in ids])
            correct = sum(self._session[i][1] for i in ids)
            digests = {key: rows[:, j] for j, key in enumerate(self.array_keys())}
            self.set_metadata(accuracy=correct / self.n_samples,
                              fingerprint=self._fingerprint_of(digests))
            return
        self._read_guard()
        digests = self._all_digests()
        root = self._group._async_group

        async def read(key: str) -> np.ndarray:
            return np.asarray(await (await root.getitem(key)).getitem(...))

        keys = ("predictions", "labels")
        found = _gather(self.path, [(f"array {key!r}", read(key)) for key in keys])
        for key, data in zip(keys, found, strict=True):
            self._check_digests(key, data, digests[key])
            self._verified.add(key)
        predictions, labels = found
        self.set_metadata(accuracy=float((predictions == labels).mean()),
                          fingerprint=self._fingerprint_of(digests))

    def pending_chunks(self) -> list[int]:
        """Ids of the chunks still to capture, in order."""
        return np.flatnonzero(~self.done_chunks()).tolist()

    @property
    def completed(self) -> int:
        """Rows in committed chunks; equals ``n_samples`` when the capture finished."""
        done = self.done_chunks()
        return int(sum(self.chunk_bounds(i)[1] - self.chunk_bounds(i)[0]
                       for i in np.flatnonzero(done)))

    @property
    def is_complete(self) -> bool:
        return bool(self.done_chunks().all())

    def reduction(self, layer: str) -> str:
        return self._layer_meta(layer)["reduction"]

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """Per-sample shape of the layer's raw output (before reduction)."""
        return tuple(self._layer_meta(layer)["output_shape"])

    def _layer_meta(self, layer: str) -> dict[str, Any]:
        layers = self._meta["layers"]
        if layer not in layers:
            from deepprofile.capture.selectors import close_matches

            hint = close_matches(layer, list(layers))
            raise UnknownLayerError(
                f"Layer {layer!r} is not in the store at {self.path}. "
                + (f"Did you mean: {', '.join(hint)}? " if hint else "")
                + f"Stored layers: {', '.join(layers)}."
            )
        return layers[layer]

    # -- writing ------------------------------------------------------------------
    def write_chunk(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows ``start:start+len`` of every array (keys as in the layout), then commit.

        ``start`` must be a chunk boundary and the block a whole chunk (or the tail).
        """
        if start % self.chunk_size:
            raise ValueError(f"start={start} is not a multiple of chunk_size={self.chunk_size}")
        expected = {f"layers/{name}" for name in self.layers} | set(_SIDE_ARRAYS)
        if set(arrays) != expected:
            raise ValueError(f"write_chunk needs exactly {sorted(expected)}, got {sorted(arrays)}")
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"Arrays of one chunk differ in length: {rows}")
        (n,) = rows
        if n != min(self.chunk_size, self.n_samples - start):
            raise ValueError(f"Chunk at {start} must hold {self.chunk_size} rows (or the tail)")
        chunk_id = start // self.chunk_size
        handles = self._write_handles()
        blocks: dict[str, np.ndarray] = {}
        for key, block in arrays.items():
            arr = handles[key]
            block = np.ascontiguousarray(block, dtype=arr.dtype)
            if block.shape[1:] != arr.shape[1:]:
                raise ValueError(f"{key}: block shape {block.shape[1:]} != store {arr.shape[1:]}")
            blocks[key] = block
        record = np.array([_digest(blocks[key]) for key in self.array_keys()] + [1],
                          dtype=np.uint32)

        # every array of the chunk at once, then (only then) its commit record
        async def write() -> None:
            results = await asyncio.gather(
                *(handles[key].setitem(slice(start, start + n), block)
                  for key, block in blocks.items()),
                return_exceptions=True)
            for result in results:  # all settled: nothing still writes when this raises
                if isinstance(result, BaseException):
                    raise result
            await handles[_COMMITS].setitem((chunk_id, slice(None)), record)

        sync(write())
        self._session[chunk_id] = (
            record[:-1], int((blocks["predictions"] == blocks["labels"]).sum()))

    def _write_handles(self) -> dict[str, Any]:
        """Zarr arrays of every data and digest array, opened once per store object."""
        if self.format != FORMAT_VERSION:
            raise StoreMismatchError(
                f"The store at {self.path} was written by an older deepprofile (store format "
                f"{self.format}); this version writes format {FORMAT_VERSION} only. Capture "
                "again with --overwrite.")
        if not self._writable:
            keys = self.array_keys() + [_COMMITS]
            root = self._group._async_group
            found = _gather(self.path, [(f"array {key!r}", root.getitem(key)) for key in keys])
            self._writable = dict(zip(keys, found, strict=True))
        return self._writable

    def raw_arrays(self) -> dict[str, bytes]:
        """Every array of the store, bookkeeping included, as bytes: two captures are
        byte-identical when these are equal (resumed vs uninterrupted, Dask vs one process)."""
        keys = self.array_keys()
        keys += ["chunks_done", *(f"digests/{k}" for k in keys)] if self.format == 1 else [
            _COMMITS]
        with _format_guard(self.path, "arrays"):
            return {k: np.ascontiguousarray(self._group[k][...]).tobytes() for k in keys}

    def set_metadata(self, **values: Any) -> None:
        """Add or update provenance entries (e.g. accuracy after capture)."""
        meta = dict(self._meta)
        meta["metadata"] = {**meta["metadata"], **_canonical(values)}
        self._group.attrs[_META] = meta

    # -- reading ------------------------------------------------------------------
    def _read_guard(self) -> None:
        if not self.is_complete:
            how = ("Run the same capture command again to resume" if self.format == FORMAT_VERSION
                   else f"It was written by an older deepprofile (store format {self.format}) "
                   "and cannot be resumed: capture again with --overwrite")
            raise CorruptStoreError(
                f"The store at {self.path} is incomplete: {self.completed} of {self.n_samples} "
                f"samples were captured. {how}."
            )
        self.check_layout()

    def _read(self, key: str) -> np.ndarray:
        self._read_guard()
        with _format_guard(self.path, f"array {key!r}"):
            data = self._group[key][...]
        # labels, indices, ... are small and decide what every analysis means: always check
        if (self.verify or not key.startswith("layers/")) and key not in self._verified:
            self._check_digests(key, data)
            self._verified.add(key)
        elif not _finite_sum(data):
            self._check_digests(key, data)  # a missing chunk reads as NaN fill values
        return data

    def _check_digests(self, key: str, data: np.ndarray,
                       digests: np.ndarray | None = None) -> None:
        digests = self._digests(key) if digests is None else digests
        for chunk_id, expected in enumerate(digests):
            block = data[chunk_id * self.chunk_size : (chunk_id + 1) * self.chunk_size]
            if _digest(block) != int(expected):
                raise CorruptStoreError(
                    f"Chunk {chunk_id} of {key!r} in {self.path} does not match its checksum "
                    "(missing or altered file). Capture again with --overwrite."
                )

    def iter_layer(self, name: str, batch_size: int | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` blocks of a layer, one or more whole chunks at a time,
        each checked against its digest, so a layer never has to fit in memory."""
        self._layer_meta(name)
        self._read_guard()
        key = f"layers/{name}"
        step = max(1, (batch_size or self.chunk_size) // self.chunk_size) * self.chunk_size
        digests = self._digests(key)
        for start in range(0, self.n_samples, step):
            with _format_guard(self.path, f"{key!r} rows {start}:{start + step}"):
                block = self._group[key][start : start + step]
            # unverified reads still check a block whose sum is NaN/inf: capture refuses
            # non-finite activations, so that is most likely a missing chunk's fill values
            if self.verify or not _finite_sum(block):
                for offset in range(0, len(block), self.chunk_size):
                    chunk_id = (start + offset) // self.chunk_size
                    if _digest(block[offset : offset + self.chunk_size]) != int(digests[chunk_id]):
                        raise CorruptStoreError(
                            f"Chunk {chunk_id} of {key!r} in {self.path} does not match its "
                            "checksum (missing or altered file). Capture again with --overwrite."
                        )
            yield start, block

    def layer(self, name: str) -> np.ndarray:
        """The stored (reduced) activations of ``name``: ``(N, *stored shape)`` float32."""
        self._layer_meta(name)
        return self._read(f"layers/{name}")

    @property
    def labels(self) -> np.ndarray:
        return self._read("labels")

    @property
    def predictions(self) -> np.ndarray:
        return self._read("predictions")

    @property
    def indices(self) -> np.ndarray:
        """Dataset index of each stored row."""
        return self._read("indices")

    @property
    def logits(self) -> np.ndarray:
        return self._read("logits")

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean())

    def summary(self) -> dict[str, Any]:
        """Shapes and reductions of every layer, sample count, accuracy."""
        return {
            "path": str(self.path),
            "n_samples": self.n_samples,
            "completed": self.completed,
            "accuracy": self.accuracy if self.is_complete else None,
            "layers": {
                name: {
                    "reduction": self.reduction(name),
                    "output_shape": list(self.output_shape(name)),
                    "stored_shape": list(self._layer_meta(name)["stored_shape"]),
                }
                for name in self.layers
            },
        }

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, n_samples={self.n_samples}, "
            f"layers={self.layers}, completed={self.completed})"
        )


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]
