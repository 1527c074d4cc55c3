"""Per-layer activation statistics of a store: scale, sparsity, dead and saturated units.

A unit (channel) is *dead* when it is zero for every sample (a ReLU that never
fires), *saturated* (constant) when its standard deviation across samples is
below ``rel_tol`` times the layer's mean standard deviation: it carries no
information about the input either way.
"""

from __future__ import annotations

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
        return cls(**{**data, "layers": [LayerStats(**row) for row in data["layers"]]})


def layer_stats(values: np.ndarray, layer: str = "", reduction: str = "",
                output_shape: list[int] | None = None, rel_tol: float = 1e-6) -> LayerStats:
    """Statistics of ``values`` shaped ``(N, C)``, ``(N, k, C)`` or ``(N, C, *spatial)``."""
    if reduction.startswith("positions"):
        units = values.reshape(-1, values.shape[-1])  # (N*k, C)
    else:
        units = values.reshape(values.shape[0], values.shape[1], -1)
        units = units.transpose(0, 2, 1).reshape(-1, values.shape[1])  # (N*P, C)
    unit_std = units.std(axis=0)
    unit_absmax = np.abs(units).max(axis=0)
    dead = np.flatnonzero(unit_absmax == 0)
    scale = float(unit_std.mean()) if unit_std.size else 0.0
    saturated = np.flatnonzero((unit_std <= rel_tol * max(scale, 1e-12)) & (unit_absmax > 0))
    return LayerStats(
        layer=layer, reduction=reduction, output_shape=list(output_shape or []),
        stored_shape=list(values.shape[1:]), n_units=int(units.shape[1]),
        mean=float(values.mean()), std=float(values.std()), min=float(values.min()),
        max=float(values.max()), fraction_zero=float((values == 0).mean()),
        dead_units=dead.tolist(), saturated_units=saturated.tolist(),
        unit_mean=units.mean(axis=0).round(6).tolist(), unit_std=unit_std.round(6).tolist(),
    )


def capture_stats(store: ActivationStore) -> CaptureStats:
    """Compute :class:`LayerStats` for every layer of ``store`` (reads each layer once)."""
    rows = [
        layer_stats(store.layer(name), name, store.reduction(name),
                    list(store.output_shape(name)))
        for name in store.layers
    ]
    meta = {k: store.metadata.get(k) for k in ("model", "weights_hash", "dataset")}
    return CaptureStats(str(store.path), store.n_samples, store.accuracy, rows, meta)
