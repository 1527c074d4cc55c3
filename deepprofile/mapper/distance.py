"""Distances between mapper graphs built on the same points.

Following Zhou et al. ("Comparing Mapper Graphs via Hypergraph Co-Optimal
Transport", TopoInVis 2023), a mapper graph on points ``X`` is read as a
hypergraph whose hyperedges are its nodes, and then as a *measure hypernetwork*
``H = (X, mu, V, nu, omega)``:

- ``mu``: uniform probability on the ``N`` points (points in no node included);
- ``nu``: probability on the nodes, proportional to node size (``node_weights="size"``,
  default) or uniform;
- ``omega(x, v)``: how strongly point ``x`` belongs to node ``v``. ``"path"`` (default):
  ``omega = 1 / (1 + h)`` where ``h`` is the number of graph edges from the nearest
  node holding ``x`` to ``v`` (1 for members, 1/2 for nodes next to them, ...; 0 when
  ``v`` is unreachable or ``x`` lies in no node). This is ``2 / (1 + d_B)`` with
  ``d_B`` the shortest-path distance from ``x`` to ``v`` in the bipartite
  point-node incidence graph, so it carries the graph's shape, not only membership.
  ``"incidence"``: ``omega`` is the 0/1 membership matrix.

The co-optimal transport distance (p = 2) between two hypernetworks is::

    d(H, H')^2 = min_{pi in Pi(mu, mu'), xi in Pi(nu, nu')}
                 sum_{x, x', v, v'} (omega(x, v) - omega'(x', v'))^2 pi(x, x') xi(v, v')

Two couplings are available:

- ``coupling="fixed"`` (default): both graphs are built on the *same* points
  (two layers, or one layer of two models, on the same images), so the point
  coupling is the identity ``pi = diag(mu)``. The problem is then a linear
  optimal transport over nodes with cost ``M(v, v') = sum_x mu(x) (omega(x, v) -
  omega'(x, v'))^2``, solved exactly (``ot.emd2``): convex, exact, symmetric, zero
  for a graph and itself, and sensitive to which points sit where.
- ``coupling="free"``: the full co-optimal transport of Zhou et al., which also
  optimises ``pi`` (it ignores which point is which and compares shapes only).
  Solved with POT's block coordinate descent (``ot.coot.co_optimal_transport``,
  exact EMD steps) from a warm start at the identity point coupling and the
  fixed-coupling node coupling, so the value is never above the fixed one. The
  problem is non-convex: the result is a local minimum (an upper bound of the
  true distance). ``n_restarts`` adds seeded random-permutation starts; both
  argument orders are solved and the smaller value kept, which makes it
  symmetric. Costs O(N^2) memory and one N x N EMD per iteration: use
  ``max_points`` (seeded subsample of the points) above a few thousand points.

A cheap baseline compares the point-to-node assignments directly
(:func:`assignment_agreement`): adjusted Rand index and variation of information
between the partitions the two covers induce on the points (:func:`cover_cells`):
points lying in exactly the same set of nodes form one cell (so the points in the
overlap of two nodes are a cell of their own), and each point in no node is a
singleton. With one node per point this is exactly the usual ARI / VI of the
node labels; a graph compared with itself gives ARI 1 and VI 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError, ShapeError
from deepprofile.mapper.graph import MapperGraphResult

METHODS = ("coot", "coot_free", "vi", "ari")


# --------------------------------------------------------------------------------------
# hypernetwork representation
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """``omega`` (N points x n nodes) with the point and node measures."""

    omega: np.ndarray
    mu: np.ndarray
    nu: np.ndarray


def _members(graph: MapperGraphResult | Sequence[Sequence[int]]) -> list[np.ndarray]:
    if isinstance(graph, MapperGraphResult):
        return [np.asarray(n.members, dtype=np.int64) for n in graph.nodes]
    return [np.asarray(m, dtype=np.int64) for m in graph]


def _edges(graph: MapperGraphResult) -> list[tuple[int, int]]:
    pos = {n.id: j for j, n in enumerate(graph.nodes)}
    return [(pos[a], pos[b]) for a, b, _ in graph.edges]


def hypernetwork(
    graph: MapperGraphResult,
    *,
    omega: str = "path",
    node_weights: str = "size",
    points: np.ndarray | None = None,
) -> Hypernetwork:
    """The measure hypernetwork of a mapper graph (see the module docstring).

    ``points`` restricts it to a subset of point indices (rows of ``omega``).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    n_points = graph.n_points
    members = _members(graph)
    n = len(members)
    rows = np.arange(n_points) if points is None else np.asarray(points, dtype=np.int64)
    if n == 0:  # the empty hypergraph: one hyperedge no point belongs to
        return Hypernetwork(
            np.zeros((len(rows), 1)), np.full(len(rows), 1.0 / len(rows)), np.ones(1)
        )
    incidence = np.zeros((n_points, n), dtype=bool)
    for j, m in enumerate(members):
        incidence[m, j] = True
    if omega == "incidence":
        om = incidence.astype(np.float64)
    elif omega == "path":
        edges = _edges(graph)
        if edges:
            e = np.asarray(edges)
            adj = csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
            hops = shortest_path(adj, directed=False, unweighted=True)
        else:
            hops = np.where(np.eye(n, dtype=bool), 0.0, np.inf)
        h = np.full((n_points, n), np.inf)
        for j, m in enumerate(members):
            h[m] = np.minimum(h[m], hops[j][None, :])
        om = 1.0 / (1.0 + h)  # inf -> 0
    else:
        raise DeepProfileError(f"omega must be 'path' or 'incidence'; got {omega!r}.")
    if node_weights == "size":
        nu = np.array([len(m) for m in members], dtype=np.float64)
    elif node_weights == "uniform":
        nu = np.ones(n)
    else:
        raise DeepProfileError(f"node_weights must be 'size' or 'uniform'; got {node_weights!r}.")
    om = om[rows]
    return Hypernetwork(om, np.full(len(rows), 1.0 / len(rows)), nu / nu.sum())


ALIGN = ("error", "common")


@dataclass(frozen=True, eq=False)
class PointAlignment:
    """Which point of graph A is which point of graph B.

    ``rows_a[i]`` and ``rows_b[i]`` are the same sample (the ``i``-th compared point);
    ``n_compared`` of ``n_a`` / ``n_b`` points are compared; ``by`` says how the points were
    matched (``"sample_ids"``, or ``"position"`` for graphs without sample ids).
    """

    rows_a: np.ndarray
    rows_b: np.ndarray
    n_a: int
    n_b: int
    by: str

    @property
    def n_compared(self) -> int:
        return int(len(self.rows_a))

    def to_dict(self) -> dict[str, Any]:
        return {"n_compared": self.n_compared, "n_a": self.n_a, "n_b": self.n_b, "by": self.by}


def _point_keys(graph: MapperGraphResult) -> np.ndarray:
    """One key per point: (sample id, occurrence of that id so far), so several positions of
    one image (``positions:k``) pair up slot by slot."""
    ids = np.asarray(graph.sample_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    occurrence = np.empty(len(ids), dtype=np.int64)
    sorted_ids = ids[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_ids)) + 1]
    counts = np.diff(np.r_[starts, len(ids)])
    occurrence[order] = np.arange(len(ids)) - np.repeat(starts, counts)
    return np.stack([ids, occurrence], axis=1)


def align_points(a: MapperGraphResult, b: MapperGraphResult, align: str = "error"
                 ) -> PointAlignment:
    """Pair the points of two graphs by their sample ids.

    Graphs on the same samples (in any order) are paired one to one. Graphs on different
    samples raise a :class:`~deepprofile.errors.ShapeError` with ``align="error"``; with
    ``align="common"`` only the samples both cover are compared (the returned alignment says
    how many). Graphs without sample ids (built from bare arrays, or results written before
    ids were stored) can only be paired by position and must have the same number of points.
    """
    if align not in ALIGN:
        raise DeepProfileError(f"align must be one of {', '.join(ALIGN)}; got {align!r}.")
    if a.sample_ids is None or b.sample_ids is None:
        if a.n_points != b.n_points:
            raise ShapeError(
                f"Mapper graphs must be built on the same points to be compared: {a.layer!r} "
                f"has {a.n_points} points, {b.layer!r} has {b.n_points}."
            )
        rows = np.arange(a.n_points)
        return PointAlignment(rows, rows.copy(), a.n_points, b.n_points, "position")
    ka, kb = _point_keys(a), _point_keys(b)
    if ka.shape[0] != a.n_points or kb.shape[0] != b.n_points:
        raise ShapeError("A mapper graph's sample_ids do not have one entry per point.")
    view = np.dtype([("id", np.int64), ("k", np.int64)])
    sa = np.ascontiguousarray(ka).view(view).ravel()
    sb = np.ascontiguousarray(kb).view(view).ravel()
    _, rows_a, rows_b = np.intersect1d(sa, sb, assume_unique=True, return_indices=True)
    if len(rows_a) != a.n_points or len(rows_b) != b.n_points:
        if align == "error":
            raise ShapeError(
                f"Mapper graphs {a.layer!r} ({a.n_points} points) and {b.layer!r} "
                f"({b.n_points} points) cover different samples ({len(rows_a)} in common); "
                "build both on the same images, or pass align='common' to compare them on "
                "the common samples only."
            )
        if len(rows_a) < 2:
            raise ShapeError(f"Mapper graphs {a.layer!r} and {b.layer!r} share "
                             f"{len(rows_a)} samples; nothing to compare.")
    order = np.argsort(rows_a, kind="stable")  # A's point order
    return PointAlignment(rows_a[order], rows_b[order], a.n_points, b.n_points, "sample_ids")


def _coot_value(
    X: np.ndarray, Y: np.ndarray, pi: np.ndarray, xi: np.ndarray, hx: Hypernetwork,
    hy: Hypernetwork,
) -> float:
    """``sum (X_iv - Y_kw)^2 pi_ik xi_vw`` without forming the 4-D tensor."""
    const = (X**2 @ hx.nu) @ hx.mu + (Y**2 @ hy.nu) @ hy.mu  # marginals of pi, xi
    cross = np.sum((X @ xi @ Y.T) * pi)
    return float(max(const - 2.0 * cross, 0.0))


def _fixed(hx: Hypernetwork, hy: Hypernetwork) -> tuple[float, np.ndarray]:
    import ot

    X, Y, mu = hx.omega, hy.omega, hx.mu
    cost = (mu @ X**2)[:, None] + (mu @ Y**2)[None, :] - 2.0 * (X.T * mu) @ Y
    cost = np.maximum(cost, 0.0)
    xi = ot.emd(hx.nu, hy.nu, cost, numItermax=10_000_000)
    # The expansion above loses digits to cancellation; recompute the cost exactly on
    # the support of the optimal plan (at most n + n' - 1 pairs), so that a graph
    # compared with itself gives exactly 0.
    v, w = np.nonzero(xi > 0)
    exact = ((X[:, v] - Y[:, w]) ** 2 * mu[:, None]).sum(axis=0)
    return float(np.sum(exact * xi[v, w])), xi


def _free(hx: Hypernetwork, hy: Hypernetwork, n_restarts: int, seed: int) -> float:
    from ot.coot import co_optimal_transport

    X, Y = hx.omega, hy.omega
    n = X.shape[0]
    best, xi0 = _fixed(hx, hy)
    starts = [np.arange(n)]
    rng = np.random.default_rng(seed)
    starts += [rng.permutation(n) for _ in range(n_restarts)]
    for perm in starts:
        pi0 = np.zeros((n, n))
        pi0[np.arange(n), perm] = 1.0 / n
        warm = {
            "pi_sample": pi0,
            "pi_feature": xi0 if perm is starts[0] else np.outer(hx.nu, hy.nu),
            "duals_sample": (np.zeros(n), np.zeros(n)),
            "duals_feature": (np.zeros(len(hx.nu)), np.zeros(len(hy.nu))),
        }
        pi, xi = co_optimal_transport(
            X, Y, wx_samp=hx.mu, wx_feat=hx.nu, wy_samp=hy.mu, wy_feat=hy.nu,
            warmstart=warm, nits_bcd=50, tol_bcd=1e-9, nits_ot=10_000_000,
        )
        best = min(best, _coot_value(X, Y, pi, xi, hx, hy))
    return best


def mapper_distance(
    a: MapperGraphResult,
    b: MapperGraphResult,
    *,
    coupling: str = "fixed",
    omega: str = "path",
    node_weights: str = "size",
    max_points: int | None = None,
    n_restarts: int = 0,
    seed: int = 0,
    align: str = "error",
) -> float:
    """Hypergraph co-optimal transport distance between two mapper graphs on the same
    points (see the module docstring for the formulation and what is approximate).

    Points are paired by sample id (:func:`align_points`): graphs on different samples are
    an error, or, with ``align="common"``, compared on the samples both cover.
    """
    pairs = align_points(a, b, align)
    n = pairs.n_compared
    keep = np.arange(n)
    if max_points is not None and n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    elif coupling == "free" and n > 5000:
        raise DeepProfileError(
            f"coupling='free' builds {n}x{n} couplings; pass max_points "
            "(e.g. 1000) to compare on a seeded subsample, or use coupling='fixed'."
        )
    hx = hypernetwork(a, omega=omega, node_weights=node_weights, points=pairs.rows_a[keep])
    hy = hypernetwork(b, omega=omega, node_weights=node_weights, points=pairs.rows_b[keep])
    if coupling == "fixed":
        value, _ = _fixed(hx, hy)
    elif coupling == "free":
        value = min(_free(hx, hy, n_restarts, seed), _free(hy, hx, n_restarts, seed))
    else:
        raise DeepProfileError(f"coupling must be 'fixed' or 'free'; got {coupling!r}.")
    return float(np.sqrt(value))


# --------------------------------------------------------------------------------------
# cheap baseline: agreement of point-to-node assignments
# --------------------------------------------------------------------------------------
def cover_cells(
    graph: MapperGraphResult | Sequence[Sequence[int]], n_points: int | None = None
) -> np.ndarray:
    """A partition label per point: the set of nodes holding it (its cell of the cover).

    Points lying in the same set of nodes share a label; points in several nodes form
    the overlap cells; every point in no node gets a label of its own (singleton).
    """
    if n_points is None:
        if not isinstance(graph, MapperGraphResult):
            raise DeepProfileError("n_points is needed when passing raw node memberships.")
        n_points = graph.n_points
    sets: list[list[int]] = [[] for _ in range(n_points)]
    for j, m in enumerate(_members(graph)):
        for i in m.tolist():
            sets[i].append(j)
    ids: dict[tuple[int, ...], int] = {}
    labels = np.empty(n_points, dtype=np.int64)
    singleton = 0
    for i, s in enumerate(sets):
        if s:
            labels[i] = ids.setdefault(tuple(s), len(ids))
        else:
            labels[i] = -1 - singleton
            singleton += 1
    return labels


def assignment_agreement(
    a: MapperGraphResult | Sequence[Sequence[int]],
    b: MapperGraphResult | Sequence[Sequence[int]],
    n_points: int | None = None,
    *,
    align: str = "error",
) -> dict[str, float]:
    """Adjusted Rand index, variation of information (nats) and VI / log N between the
    point-to-node assignments of two graphs, compared as the partitions
    :func:`cover_cells` makes of them (with one node per point: the usual ARI / VI).

    Graphs are paired by sample id as in :func:`mapper_distance`; ``n_compared`` says on how
    many points."""
    from sklearn.metrics import adjusted_rand_score, mutual_info_score

    if isinstance(a, MapperGraphResult) and isinstance(b, MapperGraphResult):
        pairs = align_points(a, b, align)
        la = cover_cells(a)[pairs.rows_a]
        lb = cover_cells(b)[pairs.rows_b]
    else:
        if n_points is None and isinstance(a, MapperGraphResult):
            n_points = a.n_points
        la, lb = cover_cells(a, n_points), cover_cells(b, n_points)

    def entropy(labels: np.ndarray) -> float:
        p = np.unique(labels, return_counts=True)[1] / len(labels)
        return float(-(p * np.log(p)).sum())

    vi = entropy(la) + entropy(lb) - 2.0 * mutual_info_score(la, lb)
    vi = vi if vi > 1e-12 else 0.0  # rounding of identical partitions
    n = len(la)
    return {
        "ari": float(adjusted_rand_score(la, lb)),
        "vi": float(vi),
        "nvi": float(vi / np.log(n)) if n > 1 else 0.0,
        "n_compared": int(n),
    }


# --------------------------------------------------------------------------------------
# layer x layer matrix
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # holds arrays: compare to_dict() instead
class MapperDistanceMatrix:
    """Pairwise distances between the mapper graphs of several layers.

    ``method``: ``coot`` (fixed point coupling), ``coot_free``, ``vi`` (variation of
    information, nats) or ``ari`` (stored as ``1 - ARI`` so that 0 means identical).
    """

    layers: tuple[str, ...]
    method: str
    values: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "method": self.method,
            "values": np.asarray(self.values).tolist(),
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapperDistanceMatrix:
        return cls(
            layers=tuple(d["layers"]),
            method=str(d["method"]),
            values=np.asarray(d["values"], dtype=np.float64),
            params=dict(d.get("params", {})),
        )


def mapper_distance_matrix(
    graphs: Mapping[str, MapperGraphResult],
    method: str = "coot",
    **kwargs: Any,
) -> MapperDistanceMatrix:
    """Symmetric layer x layer matrix with zero diagonal (each pair computed once)."""
    if method not in METHODS:
        raise DeepProfileError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    names = list(graphs)
    k = len(names)
    values = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            a, b = graphs[names[i]], graphs[names[j]]
            if method == "coot":
                v = mapper_distance(a, b, coupling="fixed", **kwargs)
            elif method == "coot_free":
                v = mapper_distance(a, b, coupling="free", **kwargs)
            else:
                agree = assignment_agreement(a, b)
                v = agree["vi"] if method == "vi" else 1.0 - agree["ari"]
            values[i, j] = values[j, i] = v
    return MapperDistanceMatrix(tuple(names), method, values, dict(kwargs))
