"""Statistics of mapper graphs (purity, loops, coverage, node sizes) and their record.

Pure functions usable on any node -> members assignment; :class:`MapperStats` is what a
:class:`~deepprofile.mapper.graph.MapperGraphResult` stores.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MapperStats:
    """Summary statistics of a mapper graph.

    - ``n_loops``: independent cycles of the graph (cycle rank ``E - V + C``).
    - ``uncovered_fraction``: share of points in no node (DBSCAN noise or points
      in cover elements with too few points to cluster).
    - ``node_purity``: mean over nodes of ``1 / (number of distinct labels in the
      node)`` (Purvine et al.); 1 when every node holds a single class.
    - ``class_purity``: for a class ``c``, the mean of that same node purity over
      the nodes that contain at least one point of class ``c``:
      ``P_c = (1/|V_c|) * sum_{v in V_c} 1/|labels(v)|`` with ``V_c`` the nodes holding
      class ``c``. It is 1 when class ``c`` never shares a node with another class
      and falls as ``c`` mixes. ``class_purity_mean`` averages ``P_c`` over the
      classes present in at least one node (classes in no node are left out and
      listed with ``None``).
    """

    n_points: int
    n_nodes: int
    n_edges: int
    n_components: int
    n_loops: int
    uncovered_fraction: float
    node_size_min: int
    node_size_median: float
    node_size_mean: float
    node_size_max: int
    node_size_hist: dict[str, int]
    node_purity: float | None
    class_purity: dict[int, float | None]
    class_purity_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["class_purity"] = {str(k): v for k, v in self.class_purity.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapperStats:
        d = dict(d)
        d["class_purity"] = {int(k): v for k, v in d.get("class_purity", {}).items()}
        d["node_size_hist"] = {str(k): int(v) for k, v in d.get("node_size_hist", {}).items()}
        return cls(**d)


# --------------------------------------------------------------------------------------
# statistics (pure functions, usable on any node -> members assignment)
# --------------------------------------------------------------------------------------
# The statistics work on one concatenated members array (node after node) and a few
# vectorised passes (np.bincount / np.unique over (node, label) keys, scipy's
# connected_components) instead of per-node np.unique loops and a networkx graph; they
# give the same numbers to the last bit. On a 10,000-point graph this took the statistics
# from about 0.025 s to under 0.01 s.
@dataclass(frozen=True, eq=False)
class _Membership:
    """Node members concatenated: ``flat[starts[j]:starts[j] + sizes[j]]`` are node j's."""

    flat: np.ndarray  # int64, all members, node after node
    node: np.ndarray  # int64, node position of every entry of ``flat``
    starts: np.ndarray
    sizes: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.sizes)

    @classmethod
    def of(cls, nodes: Sequence[Sequence[int]], sort: bool = False) -> _Membership:
        sizes = np.fromiter((len(m) for m in nodes), dtype=np.int64, count=len(nodes))
        flat = np.fromiter(
            itertools.chain.from_iterable(nodes), dtype=np.int64, count=int(sizes.sum())
        )
        node = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        starts = np.zeros(len(sizes), dtype=np.int64)
        if len(sizes) > 1:
            np.cumsum(sizes[:-1], out=starts[1:])
        mem = cls(flat=flat, node=node, starts=starts, sizes=sizes)
        return mem.sorted() if sort else mem

    def sorted(self) -> _Membership:
        """Members ascending inside each node (kmapper's already are: then ``self``)."""
        flat, node = self.flat, self.node
        if len(flat) > 1 and ((flat[1:] < flat[:-1]) & (node[1:] == node[:-1])).any():
            return _Membership(flat[np.lexsort((flat, node))], node, self.starts, self.sizes)
        return self

    def split(self, values: Sequence[Any]) -> list[Sequence[Any]]:
        """``values`` (one per entry of ``flat``) cut into one slice per node."""
        return [values[s : s + n] for s, n in zip(self.starts.tolist(), self.sizes.tolist(),
                                                   strict=True)]


@dataclass(frozen=True, eq=False)
class _LabelCounts:
    """Distinct (node, label) pairs with their counts, sorted by node then label."""

    node: np.ndarray  # node position of each pair
    label: np.ndarray  # label value of each pair
    count: np.ndarray  # members of that node with that label
    n_distinct: np.ndarray  # distinct labels per node (0 for an empty node)
    classes: np.ndarray  # sorted distinct values of the whole labels array

    @classmethod
    def of(cls, mem: _Membership, labels: np.ndarray) -> _LabelCounts:
        labels = np.asarray(labels).reshape(-1)
        if labels.dtype.kind in "iu" and len(labels) and 0 <= labels.min() and (
            labels.max() < 4 * len(labels) + 1024
        ):  # small non-negative ints: codes from a lookup table instead of a sort
            present = np.bincount(labels) > 0
            classes = np.flatnonzero(present).astype(labels.dtype)
            codes = (np.cumsum(present) - 1)[labels]
        else:
            classes, codes = np.unique(labels, return_inverse=True)
        nc = max(len(classes), 1)
        keys = mem.node * nc + codes[mem.flat]
        if mem.n_nodes * nc <= 4 * len(keys) + 1024:  # small table: count densely
            table = np.bincount(keys, minlength=mem.n_nodes * nc)
            keys = np.flatnonzero(table)
            count = table[keys]
        else:
            keys, count = np.unique(keys, return_counts=True)
        node, code = np.divmod(keys, nc)
        n_distinct = np.bincount(node, minlength=mem.n_nodes)
        return cls(node=node, label=classes[code], count=count, n_distinct=n_distinct,
                   classes=classes)

    def node_purity(self) -> float | None:
        held = self.n_distinct[self.n_distinct > 0]
        return float(np.mean(1.0 / held)) if len(held) else None

    def class_purity(self, classes: Sequence[int] | None = None) -> dict[int, float | None]:
        wanted = self.classes if classes is None else classes
        acc: dict[int, float | None] = {int(c): None for c in wanted}
        if len(self.node):
            purity = 1.0 / self.n_distinct[self.node]  # node purity, once per (node, label)
            order = np.argsort(self.label, kind="stable")  # by label, node order kept
            labels_sorted = self.label[order]
            cut = np.flatnonzero(labels_sorted[1:] != labels_sorted[:-1]) + 1
            for lab, vals in zip(labels_sorted[np.r_[0, cut]].tolist(),
                                 np.split(purity[order], cut), strict=True):
                acc[int(lab)] = float(np.mean(vals))
        return dict(sorted(acc.items()))

    def histograms(self, n_nodes: int) -> list[dict[int, int]]:
        hists: list[dict[int, int]] = [{} for _ in range(n_nodes)]
        for j, lab, c in zip(self.node.tolist(), self.label.tolist(), self.count.tolist(),
                             strict=True):
            hists[j][int(lab)] = int(c)
        return hists


def node_purity(nodes: Sequence[Sequence[int]], labels: np.ndarray) -> float | None:
    """Mean over nodes of ``1 / (number of distinct labels among the node's members)``."""
    return _LabelCounts.of(_Membership.of(nodes), labels).node_purity()


def class_purity(
    nodes: Sequence[Sequence[int]], labels: np.ndarray, classes: Sequence[int] | None = None
) -> dict[int, float | None]:
    """Class-wise purity ``P_c``: mean of ``1/|labels(v)|`` over nodes ``v`` holding class ``c``.

    Classes listed in ``classes`` (default: every label value) that lie in no node map
    to ``None``. See :class:`MapperStats` for the definition.
    """
    return _LabelCounts.of(_Membership.of(nodes), labels).class_purity(classes)


def _edge_array(edges: Sequence[tuple[int, int]], n_nodes: int) -> np.ndarray | None:
    """Edges as an ``(E, 2)`` int array of node positions, or None when some edge is not
    a pair of positions in ``range(n_nodes)`` (then networkx handles them as before)."""
    if not len(edges):
        return np.zeros((0, 2), dtype=np.int64)
    try:
        arr = np.asarray(edges)
    except (TypeError, ValueError):  # ragged: edges with attribute dicts, ...
        return None
    if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] != 2:
        return None
    if arr.min() < 0 or arr.max() >= n_nodes:
        return None
    return arr.astype(np.int64, copy=False)


def _graph_counts(n_nodes: int, edges: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """(nodes, distinct undirected edges, connected components), as networkx counts them."""
    arr = _edge_array(edges, n_nodes)
    if arr is None:
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(n_nodes))
        g.add_edges_from(edges)
        n = g.number_of_nodes()
        return n, g.number_of_edges(), (nx.number_connected_components(g) if n else 0)
    if n_nodes == 0:
        return 0, 0, 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = np.unique(arr.min(axis=1) * n_nodes + arr.max(axis=1))  # undirected, merged
    lo, hi = np.divmod(keys, n_nodes)
    adj = coo_matrix((np.ones(len(keys), dtype=np.int8), (lo, hi)), shape=(n_nodes, n_nodes))
    n_comp = connected_components(adj, directed=False, return_labels=False)
    return n_nodes, len(keys), int(n_comp)


def _overlap_counts(mem: _Membership, pairs: np.ndarray) -> np.ndarray:
    """Points shared by the nodes of each pair (rows of ``pairs``), from one sparse
    product of the node-by-point incidence matrix with its transpose."""
    if not len(pairs):
        return np.zeros(0, dtype=np.int64)
    shared = _incidence(mem)
    shared = (shared @ shared.T).tocsr()
    return np.asarray(shared[pairs[:, 0], pairs[:, 1]]).reshape(-1).astype(np.int64)


def _incidence(mem: _Membership):
    """Node-by-point 0/1 matrix (CSR) of a membership (duplicate members counted once)."""
    from scipy.sparse import csr_matrix

    n_cols = int(mem.flat.max()) + 1 if len(mem.flat) else 0
    inc = csr_matrix(
        (np.ones(len(mem.flat), dtype=np.int64), (mem.node, mem.flat)),
        shape=(mem.n_nodes, n_cols),
    )
    inc.sum_duplicates()
    inc.data[:] = 1
    return inc


def graph_stats(
    nodes: Sequence[Sequence[int]],
    edges: Sequence[tuple[int, int]],
    n_points: int,
    labels: np.ndarray | None = None,
) -> MapperStats:
    """Statistics of a mapper graph given node members (point indices) and edges
    (pairs of node positions)."""
    mem = _Membership.of(nodes)
    counts = None if labels is None else _LabelCounts.of(mem, labels)
    return _graph_stats(mem, edges, n_points, counts)


def _graph_stats(
    mem: _Membership,
    edges: Sequence[tuple[int, int]],
    n_points: int,
    counts: _LabelCounts | None,
) -> MapperStats:
    n_nodes, n_edges, n_comp = _graph_counts(mem.n_nodes, edges)
    covered = np.zeros(n_points, dtype=bool)
    covered[mem.flat] = True
    sizes = mem.sizes
    if len(sizes):
        edges_hist = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
        edges_hist = [e for e in edges_hist if e <= sizes.max()] + [int(sizes.max()) + 1]
        hist = {}
        for lo, hi in zip(edges_hist[:-1], edges_hist[1:], strict=False):
            hist[f"{lo}-{hi - 1}"] = int(((sizes >= lo) & (sizes < hi)).sum())
    else:
        hist = {}
    if counts is not None:
        cp = counts.class_purity()
        present = [v for v in cp.values() if v is not None]
        np_ = counts.node_purity()
        cp_mean = float(np.mean(present)) if present else None
    else:
        cp, np_, cp_mean = {}, None, None
    return MapperStats(
        n_points=int(n_points),
        n_nodes=int(n_nodes),
        n_edges=int(n_edges),
        n_components=int(n_comp),
        n_loops=int(n_edges - n_nodes + n_comp),
        uncovered_fraction=float(1.0 - covered.mean()) if n_points else 0.0,
        node_size_min=int(sizes.min()) if len(sizes) else 0,
        node_size_median=float(np.median(sizes)) if len(sizes) else 0.0,
        node_size_mean=float(sizes.mean()) if len(sizes) else 0.0,
        node_size_max=int(sizes.max()) if len(sizes) else 0,
        node_size_hist=hist,
        node_purity=np_,
        class_purity=cp,
        class_purity_mean=cp_mean,
    )


# --------------------------------------------------------------------------------------
# is the cover too fine for the data?
# --------------------------------------------------------------------------------------
def interval_counts(lens: Any, intervals: int, overlap: float) -> np.ndarray:
    """Points falling in each cover element (kmapper's ``Cover`` on the lens values, the
    same cover the graph was built with), one count per element."""
    import kmapper

    lens = np.asarray(lens, dtype=np.float64)
    if lens.ndim == 1:
        lens = lens[:, None]
    data = np.c_[np.arange(len(lens)), lens]
    cover = kmapper.Cover(n_cubes=int(intervals), perc_overlap=float(overlap))
    centers = cover.fit(data)
    return np.array([len(cover.transform_single(data, c)) for c in centers], dtype=np.int64)


def sparse_cover_warning(lens: Any, intervals: int, overlap: float,
                         min_samples: int) -> str | None:
    """A one-line warning when many cover elements hold too few points to cluster.

    DBSCAN (and HDBSCAN) need ``min_samples`` points to make a cluster, so an element with
    fewer points can only give noise. The warning is raised when more than a quarter of
    the non-empty elements hold fewer than ``min_samples`` points, or when the median
    element holds fewer than ``2 * min_samples``.
    """
    counts = interval_counts(lens, intervals, overlap)
    held = counts[counts > 0]
    if not len(held):
        return None
    short = int(np.sum(held < min_samples))
    median = float(np.median(held))
    if short <= len(held) / 4 and median >= 2 * min_samples:
        return None
    n = int(np.asarray(lens).shape[0])
    dims = 1 if np.asarray(lens).ndim == 1 else int(np.asarray(lens).shape[1])
    suggest = max(1, int((n / (3 * min_samples)) ** (1 / dims)))
    return (f"Too few points per interval: {n} points over {int(intervals)} intervals per "
            f"lens dimension leave a median of {median:g} points per interval, and {short} of "
            f"{len(held)} intervals hold fewer than min_samples={int(min_samples)}, so their "
            f"points can only be noise. Use about {suggest} intervals or fewer, or more "
            "points.")
