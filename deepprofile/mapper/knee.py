"""The automatic DBSCAN ``eps`` of mapper graphs: the knee of the sorted k-NN distances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepprofile.mapper.lenses import MapperParameterError, check_cloud


@dataclass(frozen=True, eq=False)
class KneeEstimate:
    """The sorted k-NN distances and the knee chosen on them as DBSCAN ``eps``."""

    eps: float
    kdist: np.ndarray  # sorted ascending, one per query point
    knee_index: int
    k: int
    n_queries: int


def knee_point(values: np.ndarray) -> int:
    """Index of the knee of an increasing, mostly convex curve (Kneedle's criterion).

    After scaling both axes to [0, 1], the knee is where the curve lies farthest
    below the chord from its first to its last point (Satopaa et al. 2011,
    without their smoothing step). Implemented here: no knee library ships with
    the stack.
    """
    y = np.sort(np.asarray(values, dtype=np.float64))
    m = len(y)
    if m < 3 or y[-1] <= y[0]:
        return m // 2
    x = np.linspace(0.0, 1.0, m)
    yn = (y - y[0]) / (y[-1] - y[0])
    return int(np.argmax(x - yn))


def knn_knee_eps(
    X: np.ndarray, min_samples: int = 5, *, sample: int | None = 300, seed: int = 0
) -> KneeEstimate:
    """DBSCAN ``eps`` from the knee of the sorted k-nearest-neighbour distances.

    ``k = min_samples`` counting the point itself, i.e. the distance to the
    ``(min_samples - 1)``-th other point: a point whose distance is below ``eps`` is
    a DBSCAN core point. When the cloud has more than ``sample`` points, the
    distances are computed for a seeded random subsample of ``sample`` *query*
    points against the *whole* cloud, so each distance is exact and only the knee
    location is estimated from fewer values (the cost is ``sample x N`` distances
    instead of ``N x N``; see the benchmark in docs/mapper.md).
    """
    from sklearn.neighbors import NearestNeighbors

    X = check_cloud(X)
    n = X.shape[0]
    if min_samples < 1:
        raise MapperParameterError(f"min_samples must be >= 1; got {min_samples}.")
    k = min(int(min_samples), n)
    if sample is not None and n > sample:
        rng = np.random.default_rng(seed)
        queries = np.sort(rng.choice(n, size=int(sample), replace=False))
    else:
        queries = np.arange(n)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X)
    dist, _ = nn.kneighbors(X[queries])
    kdist = np.sort(dist[:, -1].astype(np.float64))
    idx = knee_point(kdist)
    eps = float(kdist[idx])
    if not eps > 0:  # duplicated points: fall back to the smallest positive distance
        positive = kdist[kdist > 0]
        eps = float(positive[0]) if len(positive) else 1e-9
    return KneeEstimate(eps=eps, kdist=kdist, knee_index=idx, k=k, n_queries=len(queries))
