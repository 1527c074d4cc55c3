"""Distances between persistence diagrams, and layer x layer distance matrices.

================================  =====================================================
metric                            how it is computed, and whether it is exact
================================  =====================================================
``bottleneck``                    **exact**: hera (giotto-tda's binding) with
                                  ``delta=0``; giotto-tda's default ``delta=0.01`` would
                                  be a (1 + delta)-approximation
``wasserstein`` (order ``p``)     **exact** by default: an optimal-transport linear
                                  programme (POT's network simplex) on the diagram points
                                  plus one "diagonal" node per diagram that carries the
                                  other diagram's count; diagrams whose points share one
                                  birth (Rips H0) use an exact O(nm) dynamic programme,
                                  small ones (n + m <= 1,500) scipy's exact assignment;
                                  ``backend="hera"`` uses hera's auction instead
                                  (relative error ``delta``)
``sliced_wasserstein``            **approximate**: Carriere, Cuturi & Oudot (2017), the
                                  integral over directions replaced by ``n_directions``
                                  equally spaced directions (the grid of persim's
                                  implementation, vectorised here)
``landscape``                     **approximate**: L^p distance between the first
                                  ``n_layers`` persistence landscapes sampled on
                                  ``n_bins`` points of the two diagrams' common range
                                  (trapezoid rule)
================================  =====================================================

The ground metric inside bottleneck and Wasserstein is the L-infinity distance between
points, so a point's cost to the diagonal is half its lifetime.

Infinite deaths: with a full filtration the only infinite point is the H0 class of the
whole cloud, born at 0 in every diagram; it is dropped (any finite-cost matching pairs the
two infinite points at cost 0, so dropping changes nothing). Diagrams computed with a
cutoff ``thresh`` have deaths capped at their cutoff before comparison. Points on the
diagonal (zero lifetime) are dropped; they never change any of these distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepprofile.errors import NonFiniteActivationError, ShapeError
from deepprofile.topology.clouds import _progress
from deepprofile.topology.persistence import PersistenceDiagrams

METRICS = ("sliced_wasserstein", "wasserstein", "bottleneck", "landscape")
LSA_MAX_POINTS = 1500  # below this, scipy's assignment beats POT (and skips its import)
EXACT = {"bottleneck": True, "wasserstein": True, "sliced_wasserstein": False,
         "landscape": False}


def clean_diagram(diagram: np.ndarray, cap: float | None = None) -> np.ndarray:
    """Finite, off-diagonal ``(k, 2)`` points; infinite deaths capped at ``cap`` (or dropped
    when ``cap`` is None)."""
    dgm = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    if np.isnan(dgm).any():
        raise NonFiniteActivationError("A persistence diagram contains NaN.")
    if not np.isfinite(dgm[:, 0]).all():
        raise ShapeError("A persistence diagram has an infinite birth.")
    if cap is not None and np.isfinite(cap):
        dgm = np.column_stack([np.minimum(dgm[:, 0], cap), np.minimum(dgm[:, 1], cap)])
    dgm = dgm[np.isfinite(dgm[:, 1])]
    return dgm[dgm[:, 1] > dgm[:, 0]]


def _half_life(dgm: np.ndarray) -> np.ndarray:
    return (dgm[:, 1] - dgm[:, 0]) / 2.0


def bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    """Exact bottleneck distance (hera, delta = 0) between two finite diagrams."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if len(a) == 0 or len(b) == 0:
        return float(_half_life(a if len(a) else b).max())
    from gtda.externals import bottleneck_distance

    return float(bottleneck_distance(a.tolist(), b.tolist(), 0.0))


def wasserstein(a: np.ndarray, b: np.ndarray, p: float = 2.0, *, backend: str = "pot",
                delta: float = 0.01) -> float:
    """Wasserstein distance of order ``p`` (exact with ``backend="pot"``)."""
    if p < 1:
        raise ValueError(f"Wasserstein order p must be >= 1, got {p}")
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if len(a) == 0 or len(b) == 0:
        return float(np.sum(_half_life(a if len(a) else b) ** p) ** (1.0 / p))
    if backend == "hera":
        from gtda.externals import wasserstein_distance

        return float(wasserstein_distance(a.tolist(), b.tolist(), float(p), float(delta)))
    if backend != "pot":
        raise ValueError(f"Unknown Wasserstein backend {backend!r}; use 'pot' or 'hera'.")
    births = np.concatenate([a[:, 0], b[:, 0]])
    if np.all(births == births[0]):
        return _wasserstein_common_birth(a[:, 1] - births[0], b[:, 1] - births[0], p)
    if len(a) + len(b) <= LSA_MAX_POINTS:
        return _wasserstein_lsa(a, b, p)
    return _wasserstein_pot(a, b, p)


def _wasserstein_lsa(a: np.ndarray, b: np.ndarray, p: float) -> float:
    """Exact W_p by an optimal assignment (scipy) on the usual (n+m) x (n+m) matrix:
    points of A, then the diagonal copies of B's points, against B and A's copies."""
    from scipy.optimize import linear_sum_assignment

    n, m = len(a), len(b)
    cost = np.full((n + m, n + m), np.inf)
    cost[:n, :m] = np.max(np.abs(a[:, None, :] - b[None, :, :]), axis=2) ** p
    cost[:n, m:][np.diag_indices(n)] = _half_life(a) ** p
    cost[n:, :m][np.diag_indices(m)] = _half_life(b) ** p
    cost[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum() ** (1.0 / p))


def _wasserstein_pot(a: np.ndarray, b: np.ndarray, p: float) -> float:
    """Exact W_p of two non-empty finite diagrams by POT's network simplex."""
    import ot

    # Beyond the libraries: the compact (n+1) x (m+1) transport problem. The diagonal is one
    # node per side whose mass is the other diagram's count; integral masses make the LP's
    # optimum a matching, so this equals the usual (n+m) x (n+m) assignment, much faster.
    n, m = len(a), len(b)
    cost = np.zeros((n + 1, m + 1))
    cost[:n, :m] = np.max(np.abs(a[:, None, :] - b[None, :, :]), axis=2) ** p
    cost[:n, m] = _half_life(a) ** p
    cost[n, :m] = _half_life(b) ** p
    mass_a = np.r_[np.ones(n), float(m)]
    mass_b = np.r_[np.ones(m), float(n)]
    total = ot.emd2(mass_a, mass_b, cost, numItermax=50_000_000)
    return float(max(float(total), 0.0) ** (1.0 / p))


def _wasserstein_common_birth(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """Exact W_p between diagrams whose points share one birth (Rips H0: birth 0).

    Beyond the libraries: the points then lie on a line, the L-infinity cost between
    (0, x) and (0, y) is |x - y| and a point's cost to the diagonal is x / 2. For the convex
    cost |x - y|^p matched pairs can be uncrossed without raising the cost (Monge
    property), so an optimal partial matching is monotone and a dynamic programme over the
    sorted deaths finds it exactly, in O(n m) vectorised steps (network simplex struggles
    with the ties of these degenerate problems).
    """
    x = np.sort(x)
    y = np.sort(y)
    del_x = (x / 2.0) ** p
    del_y = (y / 2.0) ** p
    # dp[j]: cost of matching x[:i] with y[:j]; row i from row i-1 with a cumulative min:
    # dp_i[j] = min(u[j], dp_i[j-1] + del_y[j-1]) = S[j] + min_{k<=j}(u[k] - S[k]).
    prefix = np.concatenate([[0.0], np.cumsum(del_y)])
    dp = prefix.copy()
    for i in range(len(x)):
        u = np.empty_like(dp)
        u[0] = dp[0] + del_x[i]
        u[1:] = np.minimum(dp[1:] + del_x[i], dp[:-1] + np.abs(x[i] - y) ** p)
        dp = prefix + np.minimum.accumulate(u - prefix)
    return float(max(dp[-1], 0.0) ** (1.0 / p))


def _directions(n_directions: int) -> np.ndarray:
    theta = -np.pi / 2 + np.pi * np.arange(n_directions) / n_directions
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (M, 2)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_directions: int = 50) -> float:
    """Sliced Wasserstein distance (Carriere et al. 2017) with ``n_directions`` directions."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    dirs = _directions(n_directions)

    def diag(x: np.ndarray) -> np.ndarray:
        mid = (x[:, 0] + x[:, 1]) / 2.0
        return np.column_stack([mid, mid])

    u = np.vstack([a, diag(b)]) @ dirs.T  # (n+m, M)
    v = np.vstack([b, diag(a)]) @ dirs.T
    u.sort(axis=0)
    v.sort(axis=0)
    return float(np.abs(u - v).sum(axis=0).mean())


def landscapes(diagram: np.ndarray, grid: np.ndarray, n_layers: int = 5) -> np.ndarray:
    """The first ``n_layers`` persistence landscapes on ``grid``: ``(n_layers, len(grid))``."""
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros((n_layers, len(grid)))
    if len(diagram) == 0:
        return out
    tents = np.minimum(grid[:, None] - diagram[None, :, 0], diagram[None, :, 1] - grid[:, None])
    tents = np.maximum(tents, 0.0)  # (G, k)
    k = min(n_layers, tents.shape[1])
    if tents.shape[1] > k:
        tents = np.partition(tents, tents.shape[1] - k, axis=1)[:, -k:]
    top = -np.sort(-tents, axis=1)  # (G, k), largest first
    out[:k] = top.T
    return out


def landscape_distance(a: np.ndarray, b: np.ndarray, p: float = 2.0, *, n_layers: int = 5,
                       n_bins: int = 200) -> float:
    """L^p distance between persistence landscapes (first ``n_layers``) on ``n_bins``
    samples of the common range."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    both = np.vstack([a, b])
    lo, hi = float(both[:, 0].min()), float(both[:, 1].max())
    if hi <= lo:
        return 0.0
    grid = np.linspace(lo, hi, n_bins)
    diff = np.abs(landscapes(a, grid, n_layers) - landscapes(b, grid, n_layers)) ** p
    return float(np.trapz(diff, grid, axis=1).sum() ** (1.0 / p))


class DiagramDistance:
    """One diagram metric with its parameters; see the module docstring for exactness.

    Parameters
    ----------
    metric:
        ``bottleneck``, ``wasserstein``, ``sliced_wasserstein`` or ``landscape``.
    p:
        Order of the Wasserstein and landscape distances.
    n_directions:
        Directions of the sliced Wasserstein approximation.
    n_layers, n_bins:
        Landscapes compared and samples per landscape.
    backend, delta:
        Wasserstein solver: ``pot`` (exact) or ``hera`` (relative error ``delta``).
    """

    def __init__(self, metric: str = "sliced_wasserstein", *, p: float = 2.0,
                 n_directions: int = 50, n_layers: int = 5, n_bins: int = 200,
                 backend: str = "pot", delta: float = 0.01) -> None:
        if metric not in METRICS:
            raise ValueError(f"Unknown diagram metric {metric!r}; choose one of "
                             f"{', '.join(METRICS)}.")
        self.metric = metric
        self.p = p
        self.n_directions = n_directions
        self.n_layers = n_layers
        self.n_bins = n_bins
        self.backend = backend
        self.delta = delta

    def params(self) -> dict[str, Any]:
        base: dict[str, Any] = {"metric": self.metric,
                                "exact": EXACT[self.metric] and not (
                                    self.metric == "wasserstein" and self.backend == "hera")}
        if self.metric == "wasserstein":
            base.update(p=self.p, backend=self.backend, ground_metric="linf")
        elif self.metric == "bottleneck":
            base.update(backend="hera", delta=0.0, ground_metric="linf")
        elif self.metric == "sliced_wasserstein":
            base.update(n_directions=self.n_directions)
        else:
            base.update(p=self.p, n_layers=self.n_layers, n_bins=self.n_bins)
        return base

    def __call__(self, a: np.ndarray, b: np.ndarray, cap_a: float | None = None,
                 cap_b: float | None = None) -> float:
        """Distance between two ``(k, 2)`` diagrams (infinite deaths capped or dropped)."""
        a, b = clean_diagram(a, cap_a), clean_diagram(b, cap_b)
        if self.metric == "bottleneck":
            return bottleneck(a, b)
        if self.metric == "wasserstein":
            return wasserstein(a, b, self.p, backend=self.backend, delta=self.delta)
        if self.metric == "sliced_wasserstein":
            return sliced_wasserstein(a, b, self.n_directions)
        return landscape_distance(a, b, self.p, n_layers=self.n_layers, n_bins=self.n_bins)

    def between(self, a: PersistenceDiagrams, b: PersistenceDiagrams, dim: int) -> float:
        """Distance between two layers' diagrams of dimension ``dim``."""
        for dg in (a, b):
            if dim not in dg.diagrams:
                raise ShapeError(f"Layer {dg.layer!r} has no H{dim} diagram; compute it with "
                                 f"homology_dims including {dim}.")
        return self(a[dim], b[dim], a.thresh, b.thresh)

    def pairwise(self, diagrams: Sequence[PersistenceDiagrams], dim: int,
                 other: Sequence[PersistenceDiagrams] | None = None, *, quiet: bool = True
                 ) -> np.ndarray:
        """Layer x layer matrix (symmetric, zero diagonal) or, with ``other``, the cross
        matrix ``len(diagrams) x len(other)``."""
        rows = list(diagrams)
        cols = rows if other is None else list(other)
        out = np.zeros((len(rows), len(cols)))
        pairs = [(i, j) for i in range(len(rows)) for j in range(len(cols))
                 if other is not None or j > i]
        with _progress(quiet) as progress:
            task = progress.add_task(f"{self.metric} H{dim}", total=len(pairs))
            for i, j in pairs:
                out[i, j] = self.between(rows[i], cols[j], dim)
                if other is None:
                    out[j, i] = out[i, j]
                progress.advance(task)
        return out


def diagram_distance(a: np.ndarray, b: np.ndarray, metric: str = "sliced_wasserstein",
                     **params: Any) -> float:
    """Shortcut: ``DiagramDistance(metric, **params)(a, b)``."""
    return DiagramDistance(metric, **params)(a, b)


def distance_matrix(diagrams: Mapping[str, PersistenceDiagrams] | Sequence[PersistenceDiagrams],
                    dim: int = 1, metric: str = "sliced_wasserstein", *, quiet: bool = True,
                    **params: Any) -> np.ndarray:
    """Layer x layer distance matrix within one model."""
    items = list(diagrams.values()) if isinstance(diagrams, Mapping) else list(diagrams)
    return DiagramDistance(metric, **params).pairwise(items, dim, quiet=quiet)


def cross_distance_matrix(
    diagrams_a: Mapping[str, PersistenceDiagrams] | Sequence[PersistenceDiagrams],
    diagrams_b: Mapping[str, PersistenceDiagrams] | Sequence[PersistenceDiagrams],
    dim: int = 1, metric: str = "sliced_wasserstein", *, quiet: bool = True, **params: Any,
) -> np.ndarray:
    """Matrix of distances between the layers of model A (rows) and model B (columns)."""
    items_a = list(diagrams_a.values()) if isinstance(diagrams_a, Mapping) else list(diagrams_a)
    items_b = list(diagrams_b.values()) if isinstance(diagrams_b, Mapping) else list(diagrams_b)
    return DiagramDistance(metric, **params).pairwise(items_a, dim, items_b, quiet=quiet)


__all__ = [
    "EXACT", "METRICS", "DiagramDistance", "bottleneck", "clean_diagram",
    "cross_distance_matrix", "diagram_distance", "distance_matrix", "landscape_distance",
    "landscapes", "sliced_wasserstein", "wasserstein",
]
