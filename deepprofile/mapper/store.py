"""Reading mapper point clouds from an ActivationStore."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deepprofile.mapper.graph import MapperGraph, MapperGraphResult


@dataclass(frozen=True)
class LayerCloud:
    """A layer's activations as points, with per-point labels/logits and store rows."""

    layer: str
    points: np.ndarray
    point_sample: np.ndarray
    labels: np.ndarray | None
    logits: np.ndarray | None
    predictions: np.ndarray | None
    reduction: str
    sample_ids: np.ndarray | None = None  # dataset index of each point's image


def cloud_from_store(store: Any, layer: str) -> LayerCloud:
    """Read ``layer`` from an ActivationStore as an ``(points, C)`` cloud.

    ``(N, C)`` layers (mean, max, max_position) give one point per image;
    ``(N, k, C)`` (positions:k) give ``N*k`` points with labels and logits repeated;
    other shapes (flatten) are flattened per image.
    """
    acts = np.asarray(store.layer(layer))
    reduction = str(store.reduction(layer))
    n = acts.shape[0]
    if acts.ndim == 2:
        points, rows = acts, np.arange(n)
    elif acts.ndim == 3 and reduction.startswith("positions"):
        k = acts.shape[1]
        points, rows = acts.reshape(n * k, acts.shape[2]), np.repeat(np.arange(n), k)
    else:
        points, rows = acts.reshape(n, -1), np.arange(n)

    def side(name: str) -> np.ndarray | None:
        try:
            values = np.asarray(getattr(store, name))
        except Exception:  # a store without that side array: colour options degrade
            return None
        return values[rows] if values.shape[0] == n else None

    return LayerCloud(
        layer=layer,
        points=points,
        point_sample=rows,
        labels=side("labels"),
        logits=side("logits"),
        predictions=side("predictions"),
        reduction=reduction,
        sample_ids=side("indices"),
    )


def store_provenance(store: Any, layer: str | None = None) -> dict[str, Any]:
    """Model, weights hash and dataset spec from a store's metadata (what made a result)."""
    meta = dict(getattr(store, "metadata", {}) or {})
    out = {k: meta.get(k) for k in ("model", "weights_hash", "dataset") if k in meta}
    out["store"] = str(getattr(store, "path", ""))
    if layer is not None:
        try:
            out["reduction"] = str(store.reduction(layer))
        except Exception:
            pass
    return out


def mapper_from_store(store: Any, layer: str, **params: Any) -> MapperGraphResult:
    """Build the mapper graph of one stored layer (parameters as :class:`MapperGraph`)."""
    cloud = cloud_from_store(store, layer)
    class_names = (getattr(store, "metadata", {}) or {}).get("class_names")
    builder = MapperGraph(**params).fit(
        cloud.points,
        labels=cloud.labels,
        logits=cloud.logits,
        predictions=cloud.predictions,
        point_sample=None if len(cloud.point_sample) == cloud.points.shape[0]
        and np.array_equal(cloud.point_sample, np.arange(len(cloud.point_sample)))
        else cloud.point_sample,
        layer=layer,
        class_names=class_names,
        provenance=store_provenance(store, layer),
        sample_ids=cloud.sample_ids,
    )
    return builder.result_
