"""Zarr store of TRAK training features: one array per checkpoint, chunked by training sample.

Layout::

    RUN_DIR/data_attribution.zarr/
      <key>/                 key = <scope>-<checkpoint hash>-p<proj_dim>-s<seed>
        grads                (n_train, proj_dim) float32: projected, normalised gradients
        out_to_loss          (n_train,) float32: traker's Q term (1 - p of the true class)
        chunks_done          (n_chunks,) uint8, one file per chunk: 1 once committed
        attrs["deepprofile"] config (checkpoint, hash, scope, proj_dim, seed, n_train)

A chunk's flag is set only after its rows are written, so a killed featurisation
resumes with the pending chunks and a finished checkpoint is never recomputed.
Different checkpoints, scopes, projection sizes or seeds get different keys, so
nothing is ever mixed (unlike a reused traker ``save_dir``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from deepprofile.errors import CorruptStoreError, StoreMismatchError

_META = "deepprofile"


def feature_key(scope: str, checkpoint_hash: str, proj_dim: int, seed: int) -> str:
    """The group name of one checkpoint's features."""
    safe = scope.replace("/", "_").replace(".", "_")
    return f"{safe}-{checkpoint_hash}-p{proj_dim}-s{seed}"


class FeatureArray:
    """One checkpoint's training features inside a :class:`FeatureStore`."""

    def __init__(self, group: zarr.Group) -> None:
        self._group = group

    @property
    def key(self) -> str:
        """The array's group name in its store (see :func:`feature_key`)."""
        return self._group.path.rsplit("/", 1)[-1]

    @property
    def config(self) -> dict[str, Any]:
        return self._group.attrs[_META]

    @property
    def n_train(self) -> int:
        return int(self.config["n_train"])

    @property
    def chunk_size(self) -> int:
        return int(self.config["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_train // self.chunk_size)

    def chunk_bounds(self, chunk_id: int) -> tuple[int, int]:
        start = chunk_id * self.chunk_size
        return start, min(start + self.chunk_size, self.n_train)

    def pending_chunks(self) -> list[int]:
        return np.flatnonzero(self._group["chunks_done"][...] == 0).tolist()

    @property
    def is_complete(self) -> bool:
        return not self.pending_chunks()

    def write_chunk(self, chunk_id: int, grads: np.ndarray, out_to_loss: np.ndarray) -> None:
        """Write one chunk's rows, then set its completion flag."""
        start, stop = self.chunk_bounds(chunk_id)
        if grads.shape != (stop - start, self._group["grads"].shape[1]):
            raise ValueError(f"chunk {chunk_id}: grads shape {grads.shape} does not fit")
        self._group["grads"][start:stop] = np.asarray(grads, dtype=np.float32)
        self._group["out_to_loss"][start:stop] = np.asarray(out_to_loss, dtype=np.float32)
        self._group["chunks_done"][chunk_id] = 1

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """``(grads, out_to_loss)`` of a finished featurisation."""
        if not self.is_complete:
            raise CorruptStoreError(
                f"Features {self._group.path} are incomplete ({len(self.pending_chunks())} of "
                f"{self.n_chunks} chunks pending); run the featurisation again to resume.")
        grads = self._group["grads"][...]
        q = self._group["out_to_loss"][...]
        if not (np.isfinite(grads).all() and np.isfinite(q).all()):
            raise CorruptStoreError(
                f"Features {self._group.path} hold NaN/inf (a diverged checkpoint?); delete "
                "the data_attribution.zarr folder and featurise again.")
        return grads, q


class FeatureStore:
    """All checkpoints' feature arrays of one run (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _root(self) -> zarr.Group:
        return zarr.open_group(str(self.path), mode="a")

    def keys(self) -> list[str]:
        if not self.path.exists():
            return []
        return sorted(name for name, _ in self._root().groups())

    def get(self, key: str) -> FeatureArray:
        """An existing feature array."""
        return FeatureArray(self._root()[key])

    def open_or_create(self, key: str, config: Mapping[str, Any], *, n_train: int,
                       proj_dim: int, chunk_size: int = 256) -> FeatureArray:
        """The feature array ``key``: reopened when it exists with the same config."""
        config = json.loads(json.dumps(
            {**config, "n_train": n_train, "proj_dim": proj_dim, "chunk_size": chunk_size},
            sort_keys=True, default=str))
        root = self._root()
        if key in root and _META not in root[key].attrs:
            del root[key]  # killed while being created: nothing in it yet
        if key in root:
            group = root[key]
            stored = dict(group.attrs.get(_META, {}))
            if stored != config:
                diff = sorted(k for k in set(stored) | set(config)
                              if stored.get(k) != config.get(k))
                raise StoreMismatchError(
                    f"Features {key} in {self.path} were made with other settings "
                    f"({', '.join(diff)}); delete {self.path} to featurise again.")
            return FeatureArray(group)
        n_chunks = -(-n_train // chunk_size)
        group = root.create_group(key)
        comp = ZstdCodec(level=1, checksum=True)
        group.create_array("grads", shape=(n_train, proj_dim), chunks=(chunk_size, proj_dim),
                           dtype="float32", fill_value=np.nan, compressors=comp)
        group.create_array("out_to_loss", shape=(n_train,), chunks=(chunk_size,),
                           dtype="float32", fill_value=np.nan, compressors=comp)
        group.create_array("chunks_done", shape=(n_chunks,), chunks=(1,), dtype="uint8",
                           fill_value=0)
        group.attrs[_META] = config  # last: a group without config is never trusted
        return FeatureArray(group)
