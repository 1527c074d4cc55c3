"""Mapper graphs of a layer's activations, built with kmapper.

A mapper graph summarises how a layer organises the data: a *lens* maps each
activation vector to a number (or two), the lens range is covered by
overlapping intervals, the points falling in each interval are clustered in
activation space, and every cluster becomes a node; nodes sharing points are
joined by an edge. Purvine et al. ("Experimental observations of the topology
of convolutional neural network activations", arXiv 2212.00222) use the L2
norm of the activation vector as lens, about 40 intervals with 25-30 % overlap
and DBSCAN (``min_samples=5``, ``eps`` at the knee of the sorted k-nearest-
neighbour distances); deeper layers give purer, more branched graphs.

Graph construction is kmapper's (``KeplerMapper.map`` with ``kmapper.Cover`` and a
``GraphNerve`` subclass that finds the same links with one sparse product instead of
a set intersection per pair of nodes); this package adds the lens choices
(:mod:`~deepprofile.mapper.lenses`), the automatic ``eps`` (:mod:`~deepprofile.mapper.knee`),
the statistics (purity, loops, coverage; :mod:`~deepprofile.mapper.stats`) and a
JSON-serialisable result. It never renders: :mod:`deepprofile.mapper.page` writes the HTML
page.

Typical use::

    builder = MapperGraph(lens="l2norm", intervals=40, overlap=0.3, seed=0)
    result = builder.fit(X, labels=y, logits=logits, layer="layer3").result_
    result.stats.node_purity, result.to_networkx()
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.errors import ShapeError
from deepprofile.mapper.knee import knn_knee_eps
from deepprofile.mapper.lenses import (
    LensSpec,
    MapperParameterError,
    check_cloud,
    compute_lens,
    confidence_from_logits,
    lens_name,
)
from deepprofile.mapper.stats import (
    MapperStats,
    _graph_stats,
    _incidence,
    _LabelCounts,
    _Membership,
    _overlap_counts,
)


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapperNode:
    """One mapper node: a cluster of points inside one cover element.

    ``members`` are point indices (rows of the cloud); ``label_hist`` maps label ->
    count; ``purity`` is ``1 / number of distinct labels``; ``representatives`` are up
    to a few members nearest the node's mean in activation space (for thumbnails).
    """

    id: str
    members: tuple[int, ...]
    label_hist: dict[int, int] = field(default_factory=dict)
    purity: float | None = None
    mean_confidence: float | None = None
    accuracy: float | None = None
    lens_mean: tuple[float, ...] = ()
    representatives: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def majority_label(self) -> int | None:
        if not self.label_hist:
            return None
        return max(self.label_hist.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "members": list(self.members),
            "size": self.size,
            "label_hist": {str(k): int(v) for k, v in self.label_hist.items()},
            "purity": self.purity,
            "mean_confidence": self.mean_confidence,
            "accuracy": self.accuracy,
            "lens_mean": list(self.lens_mean),
            "representatives": list(self.representatives),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapperNode:
        return cls(
            id=str(d["id"]),
            members=tuple(int(m) for m in d["members"]),
            label_hist={int(k): int(v) for k, v in d.get("label_hist", {}).items()},
            purity=d.get("purity"),
            mean_confidence=d.get("mean_confidence"),
            accuracy=d.get("accuracy"),
            lens_mean=tuple(float(v) for v in d.get("lens_mean", ())),
            representatives=tuple(int(m) for m in d.get("representatives", ())),
        )


def _opt_array(values: Any, dtype: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=dtype)


@dataclass(frozen=True, eq=False)  # holds arrays: compare to_dict() instead
class MapperGraphResult:
    """A mapper graph of one layer with its statistics and per-point colouring data.

    Per-point arrays (``lens``, ``labels``, ``predictions``, ``confidence``,
    ``point_sample``) are kept so the HTML page can be rebuilt from JSON alone.
    ``point_sample[i]`` is the store row of point ``i`` (differs from ``i`` when a
    layer stores several spatial positions per image); ``None`` means identity.
    ``sample_ids[i]`` is the dataset index of point ``i``'s image: graph distances use it
    to check that two graphs cover the same samples (``None``: unknown, e.g. a graph of a
    bare array).
    """

    layer: str | None
    params: dict[str, Any]
    stats: MapperStats
    nodes: tuple[MapperNode, ...]
    edges: tuple[tuple[str, str, int], ...]  # (node a, node b, shared points)
    lens: np.ndarray
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    confidence: np.ndarray | None = None
    point_sample: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    sample_ids: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return int(self.stats.n_points)

    def node(self, node_id: str) -> MapperNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def kmapper_graph(self) -> dict[str, Any]:
        """The graph in kmapper's dict format (``nodes``, ``links``, ``meta_data``)."""
        links: dict[str, list[str]] = {}
        for a, b, _ in self.edges:
            links.setdefault(a, []).append(b)
        return {
            "nodes": {n.id: list(n.members) for n in self.nodes},
            "links": links,
            "simplices": [[n.id] for n in self.nodes] + [[a, b] for a, b, _ in self.edges],
            "meta_data": {
                "projection": str(self.params.get("lens")),
                "n_cubes": self.params.get("intervals"),
                "perc_overlap": self.params.get("overlap"),
                "clusterer": str(self.params.get("clusterer")),
            },
        }

    def assignment(self) -> list[tuple[int, ...]]:
        """For every point, the indices (into ``nodes``) of the nodes holding it."""
        out: list[list[int]] = [[] for _ in range(self.n_points)]
        for j, node in enumerate(self.nodes):
            for m in node.members:
                out[m].append(j)
        return [tuple(a) for a in out]

    def to_networkx(self):
        """A ``networkx.Graph``: node attributes size, members, label_hist, purity,
        mean_confidence, accuracy, lens_mean; edge attribute ``weight`` = shared points."""
        import networkx as nx

        g = nx.Graph(layer=self.layer, **{f"param_{k}": v for k, v in self.params.items()})
        for node in self.nodes:
            g.add_node(
                node.id,
                size=node.size,
                members=list(node.members),
                label_hist=dict(node.label_hist),
                majority_label=node.majority_label,
                purity=node.purity,
                mean_confidence=node.mean_confidence,
                accuracy=node.accuracy,
                lens_mean=list(node.lens_mean),
            )
        for a, b, w in self.edges:
            g.add_edge(a, b, weight=int(w))
        return g

    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> Any:
            return None if a is None else np.asarray(a).tolist()

        return {
            "kind": "mapper_graph",
            "layer": self.layer,
            "params": dict(self.params),
            "provenance": dict(self.provenance),
            "class_names": None if self.class_names is None else list(self.class_names),
            "stats": self.stats.to_dict(),
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [[a, b, int(w)] for a, b, w in self.edges],
            "lens": arr(self.lens),
            "labels": arr(self.labels),
            "predictions": arr(self.predictions),
            "confidence": arr(self.confidence),
            "point_sample": arr(self.point_sample),
            "sample_ids": arr(self.sample_ids),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapperGraphResult:
        lens = np.asarray(d["lens"], dtype=np.float64)
        if lens.ndim == 1:
            lens = lens[:, None]
        return cls(
            layer=d.get("layer"),
            params=dict(d.get("params", {})),
            stats=MapperStats.from_dict(d["stats"]),
            nodes=tuple(MapperNode.from_dict(n) for n in d["nodes"]),
            edges=tuple((str(a), str(b), int(w)) for a, b, w in d["edges"]),
            lens=lens,
            labels=_opt_array(d.get("labels"), np.int64),
            predictions=_opt_array(d.get("predictions"), np.int64),
            confidence=_opt_array(d.get("confidence"), np.float64),
            point_sample=_opt_array(d.get("point_sample"), np.int64),
            class_names=None if d.get("class_names") is None else tuple(d["class_names"]),
            provenance=dict(d.get("provenance", {})),
            sample_ids=_opt_array(d.get("sample_ids"), np.int64),
        )


@functools.cache
def _sparse_nerve_class() -> type:
    """kmapper's ``GraphNerve`` with the links computed from one sparse product.

    kmapper's ``GraphNerve.compute`` intersects Python sets for every pair of nodes
    (``O(nodes^2)`` set builds: about a fifth of ``KeplerMapper.map`` on a 10,000-point
    cloud). This subclass goes beyond kmapper only there: the node-by-point incidence
    matrix times its transpose gives the shared points of all pairs at once, and the
    links are emitted in kmapper's order (pairs in node insertion order), so the graph
    is identical. It also keeps the overlap counts (``overlaps_``) for the edge weights.
    """
    import kmapper

    class SparseGraphNerve(kmapper.GraphNerve):
        overlaps_: tuple[list[str], _Membership, Any] | None = None

        def compute(self, nodes: Mapping[str, Sequence[int]]) -> tuple[Any, list[list[str]]]:
            from collections import defaultdict

            from scipy.sparse import triu

            keys = list(nodes)
            self.overlaps_ = None
            if self.min_intersection < 1 or len(keys) < 2:  # every pair links: kmapper's loop
                return super().compute(nodes)
            mem = _Membership.of([nodes[k] for k in keys])
            inc = _incidence(mem)
            shared = (inc @ inc.T).tocsr()
            upper = triu(shared, k=1).tocoo()
            keep = upper.data >= self.min_intersection
            rows, cols = upper.row[keep], upper.col[keep]
            order = np.lexsort((cols, rows))
            links: dict[str, list[str]] = defaultdict(list)
            for a, b in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
                links[keys[a]].append(keys[b])
            edges = [[x, end] for x in links for end in links[x]]
            self.overlaps_ = (keys, mem, shared)
            return links, [[n] for n in nodes] + edges

    return SparseGraphNerve


# --------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------
def _make_clusterer(clusterer: Any, eps: float | None, min_samples: int, seed: int) -> Any:
    from sklearn.base import clone
    from sklearn.cluster import DBSCAN

    if isinstance(clusterer, str):
        key = clusterer.lower()
        if key == "dbscan":
            return DBSCAN(eps=eps, min_samples=min_samples)
        if key == "hdbscan":
            from sklearn.cluster import HDBSCAN

            return HDBSCAN(min_samples=min_samples)
        raise MapperParameterError(
            f"Unknown clusterer {clusterer!r}: use 'dbscan', 'hdbscan' or a scikit-learn "
            "clusterer instance (anything with fit_predict)."
        )
    if not hasattr(clusterer, "fit_predict"):
        raise MapperParameterError(
            f"clusterer must be 'dbscan', 'hdbscan' or have fit_predict(); got {clusterer!r}."
        )
    est = clone(clusterer)
    params = est.get_params()
    if "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=seed)
    return est


class MapperGraph:
    """Builds the mapper graph of a point cloud with kmapper (estimator style).

    Parameters
    ----------
    lens:
        ``"l2norm"`` (default, Purvine et al.), ``"pca"`` / ``"pca2"`` (first one or
        two principal components), ``"confidence"`` / ``"entropy"`` (softmax of the
        logits), ``"centroid"`` (distance to the point's class centroid), an array of
        lens values or a callable ``f(X)``.
    intervals, overlap:
        kmapper ``Cover(n_cubes=intervals, perc_overlap=overlap)`` (per lens dimension).
    clusterer:
        ``"dbscan"`` (default: ``DBSCAN(eps, min_samples)``), ``"hdbscan"`` or any
        scikit-learn clusterer instance (cloned; ``random_state`` set to ``seed`` when
        unset). Clustering runs in activation space inside each cover element.
    eps:
        DBSCAN radius; ``None`` picks it at the knee of the sorted k-NN distances
        (:func:`knn_knee_eps`, on ``knee_sample`` seeded query points).
    min_samples, min_intersection, representatives, seed:
        DBSCAN ``min_samples``; points two nodes must share to be joined; members kept
        per node for thumbnails; seed for PCA, subsampling and clusterers.

    After :meth:`fit`: ``lens_`` (N, d), ``eps_`` (float or None), ``knee_``
    (:class:`KneeEstimate` or None), ``graph_`` (kmapper's dict), ``result_``
    (:class:`MapperGraphResult`), ``timings_`` (seconds per step).
    """

    def __init__(
        self,
        lens: LensSpec = "l2norm",
        intervals: int = 40,
        overlap: float = 0.3,
        clusterer: Any = "dbscan",
        *,
        eps: float | None = None,
        min_samples: int = 5,
        knee_sample: int | None = 300,
        min_intersection: int = 1,
        representatives: int = 6,
        seed: int = 0,
    ) -> None:
        self.lens = lens
        self.intervals = intervals
        self.overlap = overlap
        self.clusterer = clusterer
        self.eps = eps
        self.min_samples = min_samples
        self.knee_sample = knee_sample
        self.min_intersection = min_intersection
        self.representatives = representatives
        self.seed = seed

    def _check_params(self) -> None:
        if not isinstance(self.intervals, (int, np.integer)) or self.intervals < 1:
            raise MapperParameterError(
                f"intervals must be an integer >= 1; got {self.intervals!r}."
            )
        if not (0.0 <= float(self.overlap) < 1.0):
            raise MapperParameterError(
                f"overlap is the fraction shared by neighbouring intervals, in [0, 1); got "
                f"{self.overlap!r}."
            )
        if self.eps is not None and not float(self.eps) > 0:
            raise MapperParameterError(f"eps must be > 0 (or None for automatic); got {self.eps}.")
        if int(self.min_samples) < 1:
            raise MapperParameterError(f"min_samples must be >= 1; got {self.min_samples}.")

    def fit(
        self,
        X: Any,
        *,
        labels: Any = None,
        logits: Any = None,
        predictions: Any = None,
        point_sample: Any = None,
        layer: str | None = None,
        class_names: Sequence[str] | None = None,
        provenance: Mapping[str, Any] | None = None,
        sample_ids: Any = None,
    ) -> MapperGraph:
        """Build the graph of cloud ``X`` (N, D); labels/logits/predictions are per point;
        ``sample_ids`` (per point, the dataset index of its image) is kept with the graph."""
        import kmapper

        self._check_params()
        X = check_cloud(X)
        n = X.shape[0]

        def per_point(values: Any, name: str, dtype: Any) -> np.ndarray | None:
            if values is None:
                return None
            values = np.asarray(values)
            if values.shape[0] != n:
                raise ShapeError(f"{name} has {values.shape[0]} rows but the cloud has {n} points.")
            return values.astype(dtype)

        labels = per_point(labels, "labels", np.int64)
        logits = per_point(logits, "logits", np.float64)
        predictions = per_point(predictions, "predictions", np.int64)
        point_sample = per_point(point_sample, "point_sample", np.int64)
        sample_ids = per_point(sample_ids, "sample_ids", np.int64)
        if predictions is None and logits is not None:
            predictions = logits.argmax(axis=1)
        confidence = confidence_from_logits(logits) if logits is not None else None

        clock = time.perf_counter
        t0 = clock()
        self.lens_ = compute_lens(X, self.lens, labels=labels, logits=logits, seed=self.seed)
        t1 = clock()
        is_dbscan = isinstance(self.clusterer, str) and self.clusterer.lower() == "dbscan"
        self.knee_ = None
        if is_dbscan and self.eps is None:
            self.knee_ = knn_knee_eps(
                X, self.min_samples, sample=self.knee_sample, seed=self.seed
            )
            self.eps_ = self.knee_.eps
        else:
            self.eps_ = float(self.eps) if self.eps is not None and is_dbscan else None
        clusterer = _make_clusterer(self.clusterer, self.eps_, int(self.min_samples), self.seed)

        t2 = clock()
        mapper = kmapper.KeplerMapper(verbose=0)
        nerve = _sparse_nerve_class()(min_intersection=int(self.min_intersection))
        self.graph_ = mapper.map(
            self.lens_,
            X,
            clusterer=clusterer,
            cover=kmapper.Cover(n_cubes=int(self.intervals), perc_overlap=float(self.overlap)),
            nerve=nerve,
        )
        params = {
            "lens": lens_name(self.lens),
            "lens_dim": int(self.lens_.shape[1]),
            "intervals": int(self.intervals),
            "overlap": float(self.overlap),
            "clusterer": str(clusterer),
            "eps": self.eps_,
            "eps_auto": self.knee_ is not None,
            "knee_queries": None if self.knee_ is None else self.knee_.n_queries,
            "min_samples": int(self.min_samples),
            "min_intersection": int(self.min_intersection),
            "seed": int(self.seed),
        }
        t3 = clock()
        self.result_ = self._result(
            X, labels, predictions, confidence, point_sample, layer, class_names, params,
            dict(provenance or {}), nerve.overlaps_,
        )
        if sample_ids is not None:
            self.result_ = dataclasses.replace(self.result_, sample_ids=sample_ids)
        self.timings_ = {
            "lens_s": t1 - t0, "eps_s": t2 - t1, "kmapper_map_s": t3 - t2,
            "statistics_s": clock() - t3,
        }
        return self

    def _result(
        self,
        X: np.ndarray,
        labels: np.ndarray | None,
        predictions: np.ndarray | None,
        confidence: np.ndarray | None,
        point_sample: np.ndarray | None,
        layer: str | None,
        class_names: Sequence[str] | None,
        params: dict[str, Any],
        provenance: dict[str, Any],
        overlaps: tuple[list[str], _Membership, Any] | None = None,
    ) -> MapperGraphResult:
        graph = self.graph_
        ids = sorted(graph["nodes"], key=_node_sort_key)
        if overlaps is not None and overlaps[0] == ids:  # the nerve's membership, same order
            mem = overlaps[1].sorted()
        else:
            mem = _Membership.of([graph["nodes"][i] for i in ids], sort=True)
        pos = {node_id: j for j, node_id in enumerate(ids)}
        n_nodes = mem.n_nodes
        counts = None if labels is None else _LabelCounts.of(mem, labels)
        hists = counts.histograms(n_nodes) if counts is not None else [{} for _ in ids]
        members = mem.split(mem.flat.tolist())
        bounds = list(zip(mem.starts.tolist(), (mem.starts + mem.sizes).tolist(), strict=True))
        # Per-node means reduce each node's slice of one gathered array: the same values in
        # the same layout as ``array[members].mean(axis=0)`` (add.reduce / n is what mean
        # does), so the same floats; np.add.reduceat would sum in another order.
        lens_g = self.lens_[mem.flat]
        lens_means = [tuple((np.add.reduce(lens_g[s:e], axis=0) / (e - s)).tolist())
                      for s, e in bounds]
        if confidence is None:
            mean_conf: list[float | None] = [None] * n_nodes
        else:
            conf_g = confidence[mem.flat]
            mean_conf = [float(np.add.reduce(conf_g[s:e]) / (e - s)) for s, e in bounds]
        if labels is None or predictions is None:
            accuracy: list[float | None] = [None] * n_nodes
        else:  # integer counts: exact whatever the summation order
            hits = np.bincount(mem.node, weights=predictions[mem.flat] == labels[mem.flat],
                               minlength=n_nodes)
            accuracy = (hits / mem.sizes).tolist()
        if self.representatives > 0:  # members nearest the node's mean, ties in member order
            diff = X[mem.flat].astype(np.float64)
            for s, e in bounds:
                block = diff[s:e]
                block -= np.add.reduce(block, axis=0) / (e - s)
            diff *= diff
            dist = np.sqrt(np.add.reduce(diff, axis=1))  # np.linalg.norm(axis=1), row by row
            keep = self.representatives
            reps = [tuple(mem.flat[s + np.argsort(dist[s:e], kind="stable")[:keep]].tolist())
                    for s, e in bounds]
        else:
            reps = [()] * n_nodes
        nodes = tuple(
            MapperNode(
                id=node_id,
                members=tuple(members[j]),
                label_hist=hists[j],
                purity=(1.0 / len(hists[j])) if hists[j] else None,
                mean_confidence=mean_conf[j],
                accuracy=accuracy[j],
                lens_mean=lens_means[j],
                representatives=reps[j],
            )
            for j, node_id in enumerate(ids)
        )
        ends = [(pos[a], pos[b]) for a, targets in graph["links"].items() for b in targets]
        pairs = np.sort(np.array(ends, dtype=np.int64).reshape(-1, 2), axis=1)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        if overlaps is not None and len(pairs):  # the nerve's counts, in its node order
            where = {node_id: i for i, node_id in enumerate(overlaps[0])}
            at = np.array([where[node_id] for node_id in ids], dtype=np.int64)
            shared = np.asarray(overlaps[2][at[pairs[:, 0]], at[pairs[:, 1]]]).reshape(-1)
        else:
            shared = _overlap_counts(mem, pairs)
        edges = tuple(
            (ids[a], ids[b], w)
            for a, b, w in zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), shared.tolist(),
                               strict=True)
        )
        stats = _graph_stats(mem, pairs, X.shape[0], counts)
        return MapperGraphResult(
            layer=layer,
            params=params,
            stats=stats,
            nodes=nodes,
            edges=edges,
            lens=self.lens_,
            labels=labels,
            predictions=predictions,
            confidence=confidence,
            point_sample=point_sample,
            class_names=None if class_names is None else tuple(str(c) for c in class_names),
            provenance=provenance,
        )


_NODE_ID = re.compile(r"^cube(\d+)_cluster(\d+)")


def _node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Order kmapper ids ``cube{i}_cluster{j}`` numerically (others last, by name)."""
    m = _NODE_ID.match(node_id)
    return (int(m.group(1)), int(m.group(2)), node_id) if m else (1 << 62, 0, node_id)


def build_mapper(X: Any, **kwargs: Any) -> MapperGraphResult:
    """One call: ``MapperGraph(**params).fit(X, **data).result_``.

    Keyword arguments naming :meth:`MapperGraph.fit` data (labels, logits, ...) go to
    ``fit``; the others are builder parameters.
    """
    fit_keys = {
        "labels", "logits", "predictions", "point_sample", "layer", "class_names", "provenance",
        "sample_ids",
    }
    fit_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in fit_keys}
    return MapperGraph(**kwargs).fit(X, **fit_kwargs).result_
