"""Does a concept change the shape of a layer's cloud? A permutation test on persistence.

For one layer and one concept the cloud is split into the concept-positive and the
concept-negative points. Equal-size seeded subsamples of both (``n_points`` each) get their
Vietoris-Rips diagrams (:mod:`deepprofile.topology.persistence`), and the statistic is the
diagram distance between the two sides (:mod:`deepprofile.topology.distances`), summed over
the homology dimensions. The null distribution comes from the same computation after
shuffling the concept labels among the ``2 * n_points`` pooled points, so the p-value
``(1 + #{null >= observed}) / (1 + n_permutations)`` is exact for the subsample drawn
(Phipson & Smyth 2010): a concept the layer does not separate geometrically gets a uniform
p-value.

The points are scaled by the median pairwise distance of the pooled subsample, so the
statistic is comparable across layers of different scales; the p-value does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError, ShapeError

DEFAULT_DIMS = (0, 1)


@dataclass(frozen=True)
class TopologyTest:
    """The outcome of :func:`concept_topology_test` for one layer and concept."""

    layer: str
    concept: str
    n_points: int
    n_positive: int
    n_negative: int
    metric: str
    homology_dims: tuple[int, ...]
    distance: dict[int, float]
    statistic: float
    null: tuple[float, ...]
    p_value: float

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null)) if self.null else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "concept": self.concept, "n_points": self.n_points,
            "n_positive": self.n_positive, "n_negative": self.n_negative, "metric": self.metric,
            "homology_dims": list(self.homology_dims),
            "distance": {str(k): v for k, v in self.distance.items()},
            "statistic": self.statistic, "null": list(self.null), "null_mean": self.null_mean,
            "p_value": self.p_value, "n_permutations": len(self.null),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TopologyTest:
        return cls(
            layer=data["layer"], concept=data["concept"], n_points=int(data["n_points"]),
            n_positive=int(data["n_positive"]), n_negative=int(data["n_negative"]),
            metric=data["metric"], homology_dims=tuple(int(d) for d in data["homology_dims"]),
            distance={int(k): float(v) for k, v in data["distance"].items()},
            statistic=float(data["statistic"]), null=tuple(float(v) for v in data["null"]),
            p_value=float(data["p_value"]),
        )


def _statistic(a: np.ndarray, b: np.ndarray, dims: Sequence[int], metric: str,
               n_threads: int) -> dict[int, float]:
    from deepprofile.topology.distances import DiagramDistance
    from deepprofile.topology.persistence import VietorisRips

    rips = VietorisRips(dims, n_threads=n_threads)
    da, db = rips.compute(a), rips.compute(b)
    dist = DiagramDistance(metric)
    return {d: dist.between(da, db, d) for d in dims}


def concept_topology_test(
    X: np.ndarray,
    mask: np.ndarray,
    *,
    layer: str = "",
    concept: str = "",
    n_points: int = 64,
    n_permutations: int = 49,
    homology_dims: Sequence[int] = DEFAULT_DIMS,
    metric: str = "sliced_wasserstein",
    seed: int = 0,
    n_threads: int = 1,
) -> TopologyTest:
    """Diagram distance between concept-positive and -negative sub-clouds, with its p-value.

    ``X`` is ``(N, D)`` (one point per sample; higher-rank activations are flattened),
    ``mask`` a boolean array of length ``N``. Each side contributes
    ``min(n_points, n_positive, n_negative)`` points (at least 3).
    """
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(len(X), -1)
    mask = np.asarray(mask).astype(bool).reshape(-1)
    if len(mask) != len(X):
        raise ShapeError(f"Concept {concept!r}: mask has {len(mask)} entries but layer "
                         f"{layer!r} has {len(X)} samples; masks follow the store's row order.")
    pos, neg = np.flatnonzero(mask), np.flatnonzero(~mask)
    m = min(int(n_points), len(pos), len(neg))
    if m < 3:
        raise DeepProfileError(
            f"Concept {concept!r} has {len(pos)} positive and {len(neg)} negative samples; the "
            "topology test needs at least 3 of each. Use a concept with both classes present."
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([rng.choice(pos, m, replace=False), rng.choice(neg, m, replace=False)])
    points = X[pooled]
    from scipy.spatial.distance import pdist

    scale = float(np.median(pdist(points)))
    if scale > 0:
        points = points / scale
    dims = tuple(sorted({int(d) for d in homology_dims}))
    observed = _statistic(points[:m], points[m:], dims, metric, n_threads)
    stat = float(sum(observed.values()))
    null = []
    for _ in range(int(n_permutations)):
        order = rng.permutation(2 * m)
        null.append(float(sum(_statistic(points[order[:m]], points[order[m:]], dims, metric,
                                          n_threads).values())))
    p = (1 + sum(v >= stat for v in null)) / (1 + len(null))
    return TopologyTest(
        layer=layer, concept=concept, n_points=m, n_positive=len(pos), n_negative=len(neg),
        metric=metric, homology_dims=dims, distance=observed, statistic=stat,
        null=tuple(null), p_value=float(p),
    )


__all__ = ["TopologyTest", "concept_topology_test"]
