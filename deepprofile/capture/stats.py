"""Per-layer activation statistics of a store: scale, sparsity, dead and saturated units.

A unit (channel) is *dead* when it is zero for every sample (a ReLU that never
fires), *saturated* (constant) when its standard deviation across samples is
below ``rel_tol`` times the layer's mean standard deviation: it carries no
information about the input either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deepprofile.capture.store import ActivationStore


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one stored layer (per unit = per channel of the stored reduction)."""

    layer: str
    reduction: str
    output_shape: list[int]
    stored_shape: list[int]
    n_units: int
    mean: float
    std: float
    min: float
    max: float
    fraction_zero: float
    dead_units: list[int]
    saturated_units: list[int]
    unit_mean: list[float]
    unit_std: list[float]


@dataclass(frozen=True)
class CaptureStats:
    """Statistics of every layer of a store, with the store's provenance."""

    store: str
    n_samples: int
    accuracy: float
    layers: list[LayerStats]
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptureStats:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "layers": [LayerStats(**row) for row in data["layers"]]})


class _Moments:
    """Exact streaming count, mean and sum of squared deviations per column (Chan et al.),
    plus min, max, largest magnitude and number of zeros; float64 throughout."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | float = 0.0
        self.m2: np.ndarray | float = 0.0
        self.min: np.ndarray | float = np.inf
        self.max: np.ndarray | float = -np.inf
        self.absmax: np.ndarray | float = 0.0
        self.zeros = 0

    def add(self, block: np.ndarray) -> None:
        """Merge the rows of ``block`` (``(rows, columns)`` or ``(rows,)``)."""
        nb = block.shape[0]
        if nb == 0:
            return
        block = block.astype(np.float64, copy=False)
        mb = block.mean(axis=0)
        m2b = ((block - mb) ** 2).sum(axis=0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n
        self.min = np.minimum(self.min, block.min(axis=0))
        self.max = np.maximum(self.max, block.max(axis=0))
        self.absmax = np.maximum(self.absmax, np.abs(block).max(axis=0))
        self.zeros += int(np.count_nonzero(block == 0))

    @property
    def std(self) -> np.ndarray | float:
        return np.sqrt(self.m2 / self.n) if self.n else np.nan


def _units(values: np.ndarray, reduction: str) -> np.ndarray:
    """Rows of ``values`` as ``(samples x positions, channels)``."""
    if reduction.startswith("positions"):
        return values.reshape(-1, values.shape[-1])  # (N*k, C)
    units = values.reshape(values.shape[0], values.shape[1], -1)
    return units.transpose(0, 2, 1).reshape(-1, values.shape[1])  # (N*P, C)


def _finish(units: _Moments, overall: _Moments, layer: str, reduction: str,
            output_shape: list[int] | None, stored_shape: list[int],
            rel_tol: float) -> LayerStats:
    unit_std = np.atleast_1d(units.std)
    unit_absmax = np.atleast_1d(units.absmax)
    dead = np.flatnonzero(unit_absmax == 0)
    scale = float(unit_std.mean()) if unit_std.size else 0.0
    saturated = np.flatnonzero((unit_std <= rel_tol * max(scale, 1e-12)) & (unit_absmax > 0))
    return LayerStats(
        layer=layer, reduction=reduction, output_shape=list(output_shape or []),
        stored_shape=list(stored_shape), n_units=int(unit_std.size),
        mean=float(overall.mean), std=float(overall.std), min=float(overall.min),
        max=float(overall.max), fraction_zero=overall.zeros / overall.n,
        dead_units=dead.tolist(), saturated_units=saturated.tolist(),
        unit_mean=np.atleast_1d(units.mean).round(6).tolist(),
        unit_std=unit_std.round(6).tolist(),
    )


def layer_stats(values: np.ndarray, layer: str = "", reduction: str = "",
                output_shape: list[int] | None = None, rel_tol: float = 1e-6) -> LayerStats:
    """Statistics of ``values`` shaped ``(N, C)``, ``(N, k, C)`` or ``(N, C, *spatial)``."""
    return stream_layer_stats([values], layer, reduction, output_shape, rel_tol)


def stream_layer_stats(blocks: Iterable[np.ndarray], layer: str = "", reduction: str = "",
                       output_shape: list[int] | None = None,
                       rel_tol: float = 1e-6) -> LayerStats:
    """:func:`layer_stats` over consecutive row blocks of one layer, one block in memory.

    Counts, sums, extremes and variances are merged exactly (Chan's parallel
    update in float64), so the result equals the in-memory one to float precision.
    """
    units, overall = _Moments(), _Moments()
    stored_shape: list[int] | None = None
    for values in blocks:
        values = np.asarray(values)
        stored_shape = list(values.shape[1:])
        units.add(_units(values, reduction))
        overall.add(values.reshape(-1))
    if stored_shape is None or overall.n == 0:
        raise ValueError(f"No values to compute statistics of layer {layer!r} from.")
    return _finish(units, overall, layer, reduction, output_shape, stored_shape, rel_tol)


def capture_stats(store: ActivationStore) -> CaptureStats:
    """Compute :class:`LayerStats` for every layer of ``store``, streaming chunk by chunk
    (peak memory one chunk of one layer, whatever the number of samples)."""
    rows = [
        stream_layer_stats((block for _, block in store.iter_layer(name)), name,
                           store.reduction(name), list(store.output_shape(name)))
        for name in store.layers
    ]
    meta = {k: store.metadata.get(k) for k in ("model", "weights_hash", "dataset")}
    return CaptureStats(str(store.path), store.n_samples, store.accuracy, rows, meta)
