"""Attributions against the data's geometry: manifold alignment and per-mapper-node maps.

Manifold alignment (Bordt et al., 2022): estimate the tangent space of the data manifold
at a point by local PCA over its ``n_neighbors`` nearest reference points (input space,
or a layer's activations), and measure the share of an attribution's norm lying in it,
``||P v|| / ||v||``. A random direction in R^d has expected share about ``sqrt(k/d)``
for a k-dimensional tangent space, the baseline to beat. Neighbours come from
scikit-learn; the local PCA and scores are a few lines of numpy (no library has them).

Per-node statistics connect attributions to the topology results: for the mapper graph
of a layer, given ``node_members`` (node id -> store row indices), the mean saliency map
and attribution statistics of each node's members show what each region of the graph
looks at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.errors import EmptyDatasetError, ShapeError


def tangent_basis(neighbors: np.ndarray, dim: int) -> np.ndarray:
    """Orthonormal (dim, d) basis of the top-``dim`` principal directions of ``neighbors``."""
    nb = np.asarray(neighbors, dtype=np.float64)
    if nb.ndim != 2:
        raise ShapeError(f"neighbors must be (k, d), got shape {nb.shape}")
    if not 1 <= dim <= min(nb.shape[0] - 1, nb.shape[1]):
        raise ValueError(
            f"dim={dim} must be between 1 and min(k - 1, d) = "
            f"{min(nb.shape[0] - 1, nb.shape[1])} for {nb.shape[0]} neighbours in {nb.shape[1]}-D"
        )
    centered = nb - nb.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return vt[:dim]


def alignment(vector: np.ndarray, basis: np.ndarray) -> float:
    """Share of ``vector``'s norm in the span of the orthonormal rows of ``basis`` (0..1)."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    norm = np.linalg.norm(v)
    if norm == 0:
        return float("nan")
    return float(np.linalg.norm(basis @ v) / norm)


def random_baseline(dim: int, d: int) -> float:
    """The alignment a random direction has in expectation (approximately): sqrt(dim / d)."""
    return float(np.sqrt(dim / d))


class ManifoldAlignment:
    """Tangent-space alignment of vectors at points, from local PCA of reference data.

    ``ManifoldAlignment(n_neighbors=32, dim=8).fit(reference).score(points, vectors)``.
    Reference points identical to the query point are skipped (so a point in the
    reference set is not its own neighbour).
    """

    def __init__(self, n_neighbors: int = 32, dim: int = 8) -> None:
        self.n_neighbors = n_neighbors
        self.dim = dim

    def fit(self, reference: np.ndarray) -> ManifoldAlignment:
        from sklearn.neighbors import NearestNeighbors

        ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
        if len(ref) < self.n_neighbors + 1:
            raise EmptyDatasetError(
                f"Manifold alignment needs more than n_neighbors={self.n_neighbors} reference "
                f"points, got {len(ref)}; give more reference images or lower n_neighbors."
            )
        if not 1 <= self.dim < self.n_neighbors:
            raise ValueError(f"dim must be in [1, n_neighbors), got {self.dim}")
        self.reference_ = ref
        self.n_features_ = ref.shape[1]
        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors + 1).fit(ref)
        return self

    def tangent_spaces(self, points: np.ndarray) -> np.ndarray:
        """(N, dim, d) tangent bases at ``points``."""
        pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
        if pts.shape[1] != self.n_features_:
            raise ShapeError(
                f"Points have {pts.shape[1]} features, the reference {self.n_features_}."
            )
        dist, idx = self.nn_.kneighbors(pts)
        bases = []
        for d_row, i_row in zip(dist, idx, strict=True):
            keep = i_row[d_row > 1e-12][: self.n_neighbors]
            if len(keep) < self.n_neighbors:  # the point had duplicates among its neighbours
                keep = i_row[: self.n_neighbors]
            bases.append(tangent_basis(self.reference_[keep], self.dim))
        return np.stack(bases)

    def score(self, points: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Alignment of each vector with the tangent space at its point, shape (N,)."""
        vec = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
        bases = self.tangent_spaces(points)
        return np.array([alignment(v, b) for v, b in zip(vec, bases, strict=True)])

    def random_scores(self, points: np.ndarray, n_random: int = 8, seed: int = 0) -> np.ndarray:
        """Mean alignment of ``n_random`` Gaussian directions at each point (empirical baseline)."""
        rng = np.random.default_rng(seed)
        bases = self.tangent_spaces(points)
        out = []
        for b in bases:
            r = rng.standard_normal((n_random, self.n_features_))
            out.append(np.mean(np.linalg.norm(r @ b.T, axis=1) / np.linalg.norm(r, axis=1)))
        return np.array(out)


@dataclass(frozen=True)
class AlignmentResult:
    """Alignment of one method's attributions with the data manifold's tangent spaces."""

    method: str
    space: str
    alignments: list[float]
    random_alignments: list[float]
    baseline: float
    n_neighbors: int
    dim: int
    n_features: int
    n_reference: int
    sample_indices: list[int] | None = None

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.alignments))

    @property
    def ratio(self) -> float:
        """Mean alignment over the sqrt(k/d) baseline (> 1: more aligned than chance)."""
        return self.mean / self.baseline

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return {"kind": "manifold_alignment", **jsonable({
            "method": self.method, "space": self.space, "alignments": self.alignments,
            "random_alignments": self.random_alignments, "baseline": self.baseline,
            "n_neighbors": self.n_neighbors, "dim": self.dim, "n_features": self.n_features,
            "n_reference": self.n_reference, "sample_indices": self.sample_indices,
            "mean": self.mean, "random_mean": float(np.nanmean(self.random_alignments)),
            "ratio": self.ratio,
        })}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlignmentResult:
        names = ("method", "space", "alignments", "random_alignments", "baseline",
                 "n_neighbors", "dim", "n_features", "n_reference", "sample_indices")
        return cls(**{k: data.get(k) for k in names})


def manifold_alignment(
    points: np.ndarray,
    attributions: np.ndarray,
    reference: np.ndarray,
    *,
    method: str = "",
    space: str = "input",
    n_neighbors: int = 32,
    dim: int = 8,
    n_random: int = 8,
    seed: int = 0,
    sample_indices: Sequence[int] | None = None,
) -> AlignmentResult:
    """Alignment of each attribution (flattened) with the tangent space at its point."""
    est = ManifoldAlignment(n_neighbors=n_neighbors, dim=dim).fit(reference)
    pts = np.asarray(points).reshape(len(points), -1)
    scores = est.score(pts, np.asarray(attributions).reshape(len(attributions), -1))
    rand = est.random_scores(pts, n_random=n_random, seed=seed)
    return AlignmentResult(
        method=method, space=space, alignments=scores.tolist(), random_alignments=rand.tolist(),
        baseline=random_baseline(dim, est.n_features_), n_neighbors=n_neighbors, dim=dim,
        n_features=est.n_features_, n_reference=len(est.reference_),
        sample_indices=None if sample_indices is None else [int(i) for i in sample_indices],
    )


# -- per mapper node ------------------------------------------------------------------


def _pool(m: np.ndarray, size: int) -> np.ndarray:
    """Average-pool a 2-D map down to at most ``size`` x ``size`` (for compact JSON)."""
    h, w = m.shape
    fh, fw = max(1, -(-h // size)), max(1, -(-w // size))
    hh, ww = h - h % fh, w - w % fw
    return m[:hh, :ww].reshape(hh // fh, fh, ww // fw, fw).mean(axis=(1, 3))


def _concentration(m: np.ndarray, frac: float = 0.1) -> float:
    """Share of a map's mass on its top ``frac`` of pixels (1 = all on few pixels)."""
    flat = np.sort(np.abs(m).ravel())[::-1]
    total = flat.sum()
    if total == 0:
        return float("nan")
    return float(flat[: max(1, int(round(frac * flat.size)))].sum() / total)


@dataclass(frozen=True)
class NodeAttributionStats:
    """Per mapper node: members, mean saliency map and attribution statistics.

    ``nodes[node_id]`` holds ``n_members``, ``n_explained``, ``rows`` (explained store
    rows), ``mean_map`` (pooled to at most ``pooled_size`` square), ``mean_abs``,
    ``concentration`` (mass on the top 10% pixels), ``center_of_mass``, ``label_counts``
    / ``prediction_counts`` and ``alignment`` (mean, when alignments were given).
    ``node_order`` lists node ids in the order of ``full_maps`` (full-size mean maps).
    """

    layer: str | None
    method: str
    nodes: dict[str, dict[str, Any]]
    node_order: list[str]
    map_shape: list[int]
    pooled_size: int
    full_maps: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return {"kind": "node_attribution_stats", **jsonable({
            "layer": self.layer, "method": self.method, "nodes": self.nodes,
            "node_order": self.node_order, "map_shape": self.map_shape,
            "pooled_size": self.pooled_size,
        })}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeAttributionStats:
        return cls(
            layer=data.get("layer"), method=data["method"], nodes=dict(data["nodes"]),
            node_order=list(data["node_order"]), map_shape=list(data["map_shape"]),
            pooled_size=int(data["pooled_size"]),
        )


def node_attribution_stats(
    maps: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    node_members: Mapping[str, Sequence[int]],
    *,
    labels: Mapping[int, int] | Sequence[int] | np.ndarray | None = None,
    predictions: Mapping[int, int] | Sequence[int] | np.ndarray | None = None,
    alignments: Sequence[float] | np.ndarray | None = None,
    layer: str | None = None,
    method: str = "",
    pooled_size: int = 16,
) -> NodeAttributionStats:
    """Attribution statistics of each mapper node's members.

    ``maps``: (M, H, W) saliency maps of the store rows ``rows`` (M of them);
    ``node_members``: node id -> store row indices (members without a map are counted
    but not averaged). ``labels`` / ``predictions``: indexable by store row;
    ``alignments``: one per map.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ShapeError(f"maps must be (M, H, W) saliency maps, got shape {maps.shape}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != len(maps):
        raise ShapeError(f"{len(maps)} maps for {len(rows)} rows")
    pos = {int(r): i for i, r in enumerate(rows)}
    nodes: dict[str, dict[str, Any]] = {}
    full: list[np.ndarray] = []
    order: list[str] = []

    def counts(src: Any, members: Sequence[int]) -> dict[str, int] | None:
        if src is None:
            return None
        out: dict[str, int] = {}
        for r in members:
            c = str(int(src[int(r)]))
            out[c] = out.get(c, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    for node, members in node_members.items():
        members = [int(r) for r in members]
        have = [pos[r] for r in members if r in pos]
        entry: dict[str, Any] = {
            "n_members": len(members), "n_explained": len(have),
            "rows": [int(rows[i]) for i in have],
            "label_counts": counts(labels, members),
            "prediction_counts": counts(predictions, members),
        }
        if have:
            node_maps = maps[have]
            mean_map = node_maps.mean(axis=0)
            com = np.nanmean([_com(m) for m in node_maps], axis=0)
            entry.update({
                "mean_map": np.round(_pool(mean_map, pooled_size), 6).tolist(),
                "mean_abs": float(node_maps.mean()),
                "concentration": float(np.nanmean([_concentration(m) for m in node_maps])),
                "center_of_mass": [float(c) for c in com],
                "alignment": None if alignments is None
                else float(np.nanmean(np.asarray(alignments, dtype=np.float64)[have])),
            })
            full.append(mean_map)
            order.append(str(node))
        nodes[str(node)] = entry
    return NodeAttributionStats(
        layer=layer, method=method, nodes=nodes, node_order=order,
        map_shape=list(maps.shape[1:]), pooled_size=pooled_size,
        full_maps=np.stack(full).astype(np.float32) if full else None,
    )


def _com(m: np.ndarray) -> np.ndarray:
    from deepprofile.attribution.robustness import center_of_mass

    return center_of_mass(m)


def select_node_rows(
    node_members: Mapping[str, Sequence[int]], max_per_node: int = 8, seed: int = 0
) -> np.ndarray:
    """Up to ``max_per_node`` members of every node (seeded choice), as sorted unique rows.

    Bounds the number of images to explain when nodes are large; every node keeps at
    least one explained member.
    """
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for members in node_members.values():
        m = np.asarray(list(members), dtype=np.int64)
        if len(m) > max_per_node:
            m = rng.choice(m, size=max_per_node, replace=False)
        chosen.update(int(r) for r in m)
    return np.array(sorted(chosen), dtype=np.int64)
