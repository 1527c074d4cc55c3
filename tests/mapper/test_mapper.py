"""Mapper graph construction and statistics (deepprofile.mapper)."""

from __future__ import annotations

import json

import kmapper
import networkx as nx
import numpy as np
import pytest
from sklearn.cluster import DBSCAN, KMeans

from deepprofile.errors import EmptyDatasetError, NonFiniteActivationError, ShapeError
from deepprofile.mapper import (
    MapperGraph,
    MapperGraphResult,
    MapperParameterError,
    UnknownLensError,
    build_mapper,
    class_purity,
    compute_lens,
    graph_stats,
    knee_point,
    knn_knee_eps,
    node_purity,
)
from deepprofile.results import read_json, write_json


def two_blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(size=(n, 6)) * 0.3, rng.normal(size=(n, 6)) * 0.3 + 8.0]
    return X, np.r_[np.zeros(n, int), np.ones(n, int)]


def circle(n: int = 400, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.c_[np.cos(theta), np.sin(theta)] + rng.normal(size=(n, 2)) * noise


def test_two_separated_blobs_give_two_pure_components():
    X, y = two_blobs()
    res = build_mapper(X, labels=y, intervals=10, overlap=0.3)
    assert res.stats.n_components == 2
    assert res.stats.n_loops == 0
    assert res.stats.node_purity == 1.0
    assert res.stats.class_purity == {0: 1.0, 1: 1.0}
    # each component holds one blob
    g = res.to_networkx()
    for comp in nx.connected_components(g):
        labels = {lab for node in comp for lab in g.nodes[node]["label_hist"]}
        assert len(labels) == 1


@pytest.mark.parametrize("intervals", [6, 10, 15])
def test_circle_with_pca_lens_has_one_loop(intervals):
    res = build_mapper(circle(), lens="pca", intervals=intervals, overlap=0.3)
    assert res.stats.n_components == 1
    assert res.stats.n_loops == 1
    assert res.stats.uncovered_fraction == 0.0


def test_noisy_circle_with_explicit_eps_has_one_loop():
    res = build_mapper(circle(800, noise=0.02, seed=1), lens="pca", intervals=10, eps=0.1)
    assert (res.stats.n_components, res.stats.n_loops) == (1, 1)


def test_purity_matches_hand_computation():
    nodes = [[0, 1, 2], [2, 3], [4, 5, 6]]
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    # node label sets {0,1}, {1}, {2} -> purities 1/2, 1, 1
    assert node_purity(nodes, labels) == pytest.approx((0.5 + 1 + 1) / 3)
    cp = class_purity(nodes, labels, classes=[0, 1, 2, 3])
    # class 0 only in node 0; class 1 in nodes 0 and 1; class 2 in node 2; class 3 nowhere
    assert cp == {0: 0.5, 1: pytest.approx(0.75), 2: 1.0, 3: None}
    stats = graph_stats(nodes, [(0, 1)], n_points=9, labels=np.r_[labels, 0, 1])
    assert stats.n_nodes == 3 and stats.n_edges == 1 and stats.n_components == 2
    assert stats.uncovered_fraction == pytest.approx(2 / 9)
    assert stats.class_purity_mean == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    assert (stats.node_size_min, stats.node_size_max, stats.node_size_median) == (2, 3, 3)


def test_cycle_rank_counts_independent_loops():
    # two triangles sharing node 0 plus a pendant: E=7, V=6, C=1 -> 2 loops
    nodes = [[i] for i in range(6)]
    edges = [(0, 1), (1, 2), (2, 0), (0, 3), (3, 4), (4, 0), (4, 5)]
    stats = graph_stats(nodes, edges, n_points=6)
    assert stats.n_loops == 2 == len(nx.cycle_basis(nx.Graph(edges)))
    assert stats.node_purity is None


def test_knee_eps_lies_in_the_knee_region():
    # dense blobs (small k-NN distances) plus sparse uniform noise (large ones): the knee
    # separates them
    rng = np.random.default_rng(3)
    blobs = np.concatenate([rng.normal(size=(300, 3)) * 0.05 + c for c in np.eye(3) * 5])
    noise = rng.uniform(-3, 8, size=(100, 3))
    X = np.r_[blobs, noise]
    full = knn_knee_eps(X, min_samples=5, sample=None)
    from sklearn.neighbors import NearestNeighbors

    kd = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(X)[0][:, -1]
    blob_kd, noise_kd = kd[:900], kd[900:]
    assert np.quantile(blob_kd, 0.9) <= full.eps <= np.median(noise_kd)
    np.testing.assert_allclose(full.kdist, np.sort(kd))
    # a seeded subsample of queries against the full cloud lands in the same region
    sub = knn_knee_eps(X, min_samples=5, sample=300, seed=1)
    assert sub.n_queries == 300
    assert np.quantile(blob_kd, 0.9) <= sub.eps <= np.median(noise_kd)
    assert knn_knee_eps(X, sample=300, seed=1).eps == sub.eps  # seeded


def test_knee_point_of_a_hockey_stick():
    y = np.r_[np.linspace(0, 1, 80), np.linspace(1, 20, 20)]
    assert 75 <= knee_point(y) <= 81


def test_lenses_match_independent_formulas():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    logits = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, 50)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(compute_lens(X, "l2norm")[:, 0], np.sqrt((X**2).sum(1)))
    np.testing.assert_allclose(compute_lens(X, "confidence", logits=logits)[:, 0], p.max(1))
    np.testing.assert_allclose(
        compute_lens(X, "entropy", logits=logits)[:, 0], -(p * np.log(p)).sum(1)
    )
    cent = np.array([X[labels == c].mean(0) for c in range(3)])[labels]
    np.testing.assert_allclose(
        compute_lens(X, "centroid", labels=labels)[:, 0], np.linalg.norm(X - cent, axis=1)
    )
    pca = compute_lens(X, "pca2")
    assert pca.shape == (50, 2)
    assert abs(np.corrcoef(pca[:, 0], pca[:, 1])[0, 1]) < 1e-8  # principal axes decorrelate
    np.testing.assert_allclose(compute_lens(X, lambda a: a[:, 0])[:, 0], X[:, 0])
    np.testing.assert_allclose(compute_lens(X, X[:, :2]), X[:, :2])


def test_bad_input_raises_clear_errors():
    X, y = two_blobs(20)
    with pytest.raises(EmptyDatasetError):
        build_mapper(np.zeros((0, 3)))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteActivationError, match="NaN"):
        build_mapper(bad)
    with pytest.raises(UnknownLensError, match="l2norm"):
        build_mapper(X, lens="umap")
    with pytest.raises(MapperParameterError, match="logits"):
        build_mapper(X, lens="confidence")
    with pytest.raises(MapperParameterError, match="overlap"):
        build_mapper(X, overlap=1.0)
    with pytest.raises(MapperParameterError, match="intervals"):
        build_mapper(X, intervals=0)
    with pytest.raises(ShapeError, match="labels"):
        build_mapper(X, labels=y[:-1])
    with pytest.raises(ShapeError):
        build_mapper(X, lens=np.ones((len(X), 3)))
    with pytest.raises(MapperParameterError, match="clusterer"):
        build_mapper(X, clusterer="spectral-magic")


def test_same_graph_as_kmapper_used_directly():
    X, y = two_blobs(150, seed=4)
    X = np.r_[X, X[:150] + np.linspace(0, 8, 150)[:, None]]  # a bridge between the blobs
    res = build_mapper(X, labels=np.r_[y, np.zeros(150, int)], intervals=12, overlap=0.25)
    km = kmapper.KeplerMapper(verbose=0)
    graph = km.map(
        np.linalg.norm(X, axis=1)[:, None], X,
        clusterer=DBSCAN(eps=res.params["eps"], min_samples=5),
        cover=kmapper.Cover(n_cubes=12, perc_overlap=0.25),
    )
    assert {k: sorted(v) for k, v in graph["nodes"].items()} == {
        n.id: list(n.members) for n in res.nodes
    }
    n_links = sum(len(v) for v in graph["links"].values())
    assert n_links == res.stats.n_edges == len(res.edges)


def test_networkx_export_carries_node_attributes():
    X, y = two_blobs(100)
    logits = np.c_[1 - y, y].astype(float) * 3
    res = build_mapper(X, labels=y, logits=logits, intervals=8)
    g = res.to_networkx()
    assert set(g.nodes) == {n.id for n in res.nodes}
    for node in res.nodes:
        attrs = g.nodes[node.id]
        assert attrs["members"] == list(node.members) and attrs["size"] == node.size
        assert sum(attrs["label_hist"].values()) == node.size
        assert attrs["accuracy"] == 1.0  # logits point at the true class
        conf = np.exp(3) / (np.exp(3) + 1)
        assert attrs["mean_confidence"] == pytest.approx(conf)
    for a, b, w in res.edges:
        assert g.edges[a, b]["weight"] == w == len(
            set(res.node(a).members) & set(res.node(b).members)
        )


def test_json_round_trip(tmp_path):
    X, y = two_blobs(80)
    logits = np.random.default_rng(0).normal(size=(len(X), 2))
    res = build_mapper(
        X, labels=y, logits=logits, intervals=8, layer="blk", class_names=["a", "b"],
        provenance={"model": "toy"},
    )
    path = write_json(tmp_path / "m.json", res)
    back = MapperGraphResult.from_dict(read_json(path))
    assert back.to_dict() == json.loads(json.dumps(res.to_dict()))
    assert back.stats == res.stats
    assert back.nodes == res.nodes
    np.testing.assert_array_equal(back.labels, y)
    assert back.class_names == ("a", "b") and back.provenance == {"model": "toy"}


def test_any_sklearn_clusterer_and_seeding():
    X, y = two_blobs(100)
    a = build_mapper(X, clusterer=KMeans(n_clusters=2, n_init=2), intervals=5, seed=3)
    b = build_mapper(X, clusterer=KMeans(n_clusters=2, n_init=2), intervals=5, seed=3)
    assert a.to_dict() == b.to_dict()
    assert "random_state=3" in a.params["clusterer"] and a.params["eps"] is None
    builder = MapperGraph(lens="pca", intervals=5, seed=0).fit(X)
    assert builder.lens_.shape == (len(X), 1) and builder.eps_ > 0
    assert builder.knee_ is not None and builder.result_.params["eps_auto"]


@pytest.mark.parametrize("min_intersection", [1, 2, 5])
def test_sparse_nerve_equals_kmappers_nerve(min_intersection):
    """The sparse-product nerve gives kmapper's links, in kmapper's order, and its simplices."""
    from deepprofile.mapper.graph import _sparse_nerve_class

    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(c, 0.6, size=(400, 8)) for c in (0.0, 3.0, 6.0)])
    lens = np.linalg.norm(X, axis=1, keepdims=True)
    graph = kmapper.KeplerMapper(verbose=0).map(
        lens, X, clusterer=DBSCAN(eps=1.2, min_samples=3),
        cover=kmapper.Cover(n_cubes=30, perc_overlap=0.5))
    nodes = graph["nodes"]
    assert len(nodes) > 10
    ours = _sparse_nerve_class()(min_intersection=min_intersection).compute(nodes)
    theirs = kmapper.GraphNerve(min_intersection=min_intersection).compute(nodes)
    assert list(ours[0].items()) == list(theirs[0].items())
    assert sorted(map(sorted, ours[1])) == sorted(map(sorted, theirs[1]))
