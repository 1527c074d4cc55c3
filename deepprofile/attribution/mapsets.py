"""Map sets: more maps in a run's ``attribution.zarr``, sharded and resumed like its own.

The store's shards hold every map of the explained images made with the run's model. Two
kinds of maps need other inputs and are kept in a *map set*, a group of the store with
its own identity, shards, flags and checksums (:class:`MapSet`):

- ``finetuned``: the SDE-smoothed maps of the noisy fine-tuned model
  (:mod:`deepprofile.attribution.finetuned`) on the store's images, targets = the run
  model's predictions (the store's ``targets``);
- ``nodes``: the base method's maps of the store rows chosen from a mapper graph's nodes
  (:func:`~deepprofile.attribution.manifold.select_node_rows`), on their own images.

Layout (inside ``RUN_DIR/attribution.zarr``)::

    sets/<name>/
      zarr.json        attrs["deepprofile"]: identity and hash, spec (what to compute),
                       maps (key -> array names), shard size, digests of images and rows
      images, rows     (M, C, H, W) float32 and (M,) int64 store rows (own images only)
      maps/<key>, variance/<key>, shards/<i>, shards_done     as in the store

A set is built under a temporary name and renamed into place; a set whose identity
differs from the one asked for (other fine-tuned weights, other node rows) is replaced,
never mixed. The set's identity includes the store's hash, so it goes with the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from deepprofile.attribution.store import (
    _META,
    FORMAT_VERSION,
    SETS,
    MapStore,
    _damaged,
    _digest,
    _Sharded,
    canonical,
    identity_hash,
    new_sharded_group,
    reuse_matching,
    safe_key,
)
from deepprofile.errors import CorruptStoreError, DeepProfileError
from deepprofile.testhooks import kill_point


class MapSet(_Sharded):
    """One map set of a :class:`~deepprofile.attribution.store.MapStore` (module docstring)."""

    _shard_point = "attribution-set-shard"

    def __init__(self, store: MapStore, name: str, group: zarr.Group) -> None:
        super().__init__(store.path / SETS / name, group)
        self.store = store
        self.name = name

    @classmethod
    def open(cls, store: MapStore, name: str) -> MapSet:
        path = store.path / SETS / name
        if not (path / "zarr.json").is_file():
            raise CorruptStoreError(
                f"The attribution maps at {store.path} hold no map set {name!r}; run "
                "`deepprofile attribute` again.")
        try:
            group = zarr.open_group(str(path), mode="r+")
            meta = group.attrs.get(_META)
        except Exception as exc:  # noqa: BLE001 - any storage error is damage
            raise _damaged(path, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise _damaged(path, f"no deepprofile metadata of format {FORMAT_VERSION}")
        return cls(store, name, group)

    @classmethod
    def open_or_create(
        cls, store: MapStore, name: str, identity: Mapping[str, Any], *,
        spec: Mapping[str, Any], map_shapes: Mapping[str, Sequence[int]],
        variance_keys: Sequence[str], images: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> MapSet:
        """The set ``name`` of ``store`` when it was made with ``identity``; else a new one.

        Without ``images`` the set explains the store's own images (same rows, same
        shards); with them (and their store ``rows``) it holds its own. ``spec`` says what
        its shards compute (:func:`deepprofile.attribution.shards.compute_set_shard`).
        """
        from deepprofile.capture.store import clean_leftovers

        path = store.path / SETS / name
        if not (store.path / SETS / "zarr.json").is_file():
            zarr.open_group(str(store.path / SETS), mode="a")  # the folder of the sets
        clean_leftovers(path)
        identity = canonical({**identity, "store": store.hash, "set": name})
        old = reuse_matching(path, identity, lambda: cls.open(store, name))
        if old is not None:
            return old
        n = store.n_images if images is None else len(images)
        if n == 0:
            raise DeepProfileError(f"Map set {name!r} has no images to explain.")
        shard_size = store.shard_size
        n_shards = -(-n // shard_size)
        tmp, group, array = new_sharded_group(path, shard_size)

        digests = {}
        if images is not None:
            if rows is None or len(rows) != n:
                raise DeepProfileError(f"Map set {name!r}: give one store row per image.")
            array("images", tuple(images.shape), "float32", np.nan)[...] = np.asarray(
                images, np.float32)
            array("rows", (n,), "int64", -1)[...] = np.asarray(rows, np.int64)
            digests = {a: _digest(group[a][...]) for a in ("images", "rows")}
        for key, shape in map_shapes.items():
            array(f"maps/{safe_key(key)}", (n, *shape), "float32", np.nan)
            if key in variance_keys:
                array(f"variance/{safe_key(key)}", (n, *shape), "float32", np.nan)
        for i in range(n_shards):
            group.create_group(f"shards/{i}")
        group.create_array("shards_done", shape=(n_shards,), chunks=(1,), dtype="uint8",
                           fill_value=0)
        group.attrs[_META] = {  # last: a set without it is never trusted
            "format": FORMAT_VERSION, "identity": identity, "hash": identity_hash(identity),
            "spec": canonical(spec), "digests": digests, "own_images": images is not None,
            "n_images": n, "shard_size": shard_size, "n_shards": n_shards,
            "maps": {key: {"array": f"{SETS}/{name}/maps/{safe_key(key)}",
                           "variance": (f"{SETS}/{name}/variance/{safe_key(key)}"
                                        if key in variance_keys else None)}
                     for key in map_shapes},
        }
        kill_point("attribution-set-created")
        os.rename(tmp, path)
        return cls.open(store, name)

    # -- what the shards compute -----------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.meta["spec"])

    def _local(self, name: str) -> str:
        """An array name of the store (``sets/<set>/maps/<key>``) relative to this set."""
        prefix = f"{SETS}/{self.name}/"
        return name[len(prefix):] if name.startswith(prefix) else name

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        if self.meta["own_images"]:
            return self._group["images"][start:stop]
        return self.store.images(start, stop)

    def rows(self) -> np.ndarray | None:
        """The store rows of the set's own images (``None``: the store's images)."""
        return self.read("rows", complete=False) if self.meta["own_images"] else None

    # -- writing and reading -----------------------------------------------------------------
    def write_shard(self, shard: int, out: Mapping[str, Any]) -> None:
        """Commit shard ``shard`` (``out``: ``maps``, ``variance`` per key and ``meta``)."""
        blocks: list[tuple[str, Any, Any]] = []
        for key, where in self.meta["maps"].items():
            blocks.append((self._local(where["array"]), out["maps"][key], np.float32))
            if where["variance"]:
                blocks.append((self._local(where["variance"]), out["variance"][key],
                               np.float32))
        self._commit(shard, blocks, out["meta"])

    def read(self, name: str, *, complete: bool = True) -> np.ndarray:
        return super().read(self._local(name), complete=complete)
