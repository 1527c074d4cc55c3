"""Mapper graph distances (deepprofile.mapper.distance)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog
from sklearn.metrics import adjusted_rand_score, mutual_info_score

from deepprofile.errors import ShapeError
from deepprofile.mapper import MapperNode, build_mapper
from deepprofile.mapper.distance import (
    MapperDistanceMatrix,
    assignment_agreement,
    cover_cells,
    hypernetwork,
    mapper_distance,
    mapper_distance_matrix,
)


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 5)) * 0.4 + c for c in np.eye(5)[:3] * 6])
    y = np.repeat([0, 1, 2], 100)
    return build_mapper(X, labels=y, intervals=8, overlap=0.3)


def with_members(result, mapping):
    """A copy of ``result`` whose node members are mapped point-wise by ``mapping``."""
    nodes = tuple(
        dataclasses.replace(n, members=tuple(sorted(int(mapping[m]) for m in n.members)))
        for n in result.nodes
    )
    return dataclasses.replace(result, nodes=nodes)


def perturbed(result, fraction, seed):
    """Swap the identities of a few points (a small relabelling)."""
    rng = np.random.default_rng(seed)
    perm = np.arange(result.n_points)
    k = int(fraction * result.n_points)
    idx = rng.choice(result.n_points, size=k, replace=False)
    perm[idx] = idx[rng.permutation(k)]
    return with_members(result, perm)


def test_zero_for_itself_symmetric_and_ordered(graph):
    small = perturbed(graph, 0.03, seed=1)
    shuffled = with_members(graph, np.random.default_rng(2).permutation(graph.n_points))
    assert mapper_distance(graph, graph) == 0.0
    assert mapper_distance(graph, graph, omega="incidence") == 0.0
    d_small = mapper_distance(graph, small)
    assert d_small == pytest.approx(mapper_distance(small, graph), rel=1e-12)
    d_shuffled = mapper_distance(graph, shuffled)
    assert 0.0 < d_small < d_shuffled
    agree_small, agree_shuf = assignment_agreement(graph, small), assignment_agreement(
        graph, shuffled
    )
    assert agree_small["vi"] < agree_shuf["vi"] and agree_small["ari"] > agree_shuf["ari"]


def brute_force_fixed(a, b, omega="path", node_weights="size"):
    """Independent: solve the node coupling LP with scipy on the explicit 4-index cost."""
    ha = hypernetwork(a, omega=omega, node_weights=node_weights)
    hb = hypernetwork(b, omega=omega, node_weights=node_weights)
    n, m = len(ha.nu), len(hb.nu)
    cost = np.array(
        [[np.sum(ha.mu * (ha.omega[:, v] - hb.omega[:, w]) ** 2) for w in range(m)]
         for v in range(n)]
    )
    eq = np.zeros((n + m, n * m))
    for v in range(n):
        eq[v, v * m:(v + 1) * m] = 1
    for w in range(m):
        eq[n + w, w::m] = 1
    res = linprog(cost.ravel(), A_eq=eq, b_eq=np.r_[ha.nu, hb.nu], bounds=(0, None))
    return np.sqrt(res.fun)


def test_fixed_coupling_matches_linear_program(graph):
    other = perturbed(graph, 0.1, seed=5)
    for omega in ("path", "incidence"):
        for weights in ("size", "uniform"):
            expected = brute_force_fixed(graph, other, omega, weights)
            got = mapper_distance(graph, other, omega=omega, node_weights=weights)
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_path_omega_on_a_hand_made_graph(graph):
    # path of three nodes a - b - c, plus a point in no node
    nodes = (
        MapperNode("a", (0, 1)), MapperNode("b", (1, 2)), MapperNode("c", (2, 3)),
        MapperNode("d", (5,)),
    )
    stats = dataclasses.replace(graph.stats, n_points=6)
    g = dataclasses.replace(
        graph, nodes=nodes, edges=(("a", "b", 1), ("b", "c", 1)), stats=stats
    )
    h = hypernetwork(g, omega="path", node_weights="uniform")
    np.testing.assert_allclose(h.omega[0], [1, 1 / 2, 1 / 3, 0])
    np.testing.assert_allclose(h.omega[1], [1, 1, 1 / 2, 0])  # in a and b
    np.testing.assert_allclose(h.omega[4], [0, 0, 0, 0])  # in no node
    np.testing.assert_allclose(h.nu, 0.25)
    np.testing.assert_allclose(hypernetwork(g, omega="incidence").nu, [2, 2, 2, 1] / np.r_[7.0])


def test_free_coupling_is_zero_on_itself_and_below_fixed(graph):
    small = perturbed(graph, 0.05, seed=3)
    assert mapper_distance(graph, graph, coupling="free") == pytest.approx(0.0, abs=1e-7)
    free = mapper_distance(graph, small, coupling="free")
    fixed = mapper_distance(graph, small)
    assert free <= fixed + 1e-12
    assert free == pytest.approx(mapper_distance(small, graph, coupling="free"), abs=1e-9)
    # it ignores point identities: a relabelled copy is (nearly) the same hypernetwork
    shuffled = with_members(graph, np.random.default_rng(4).permutation(graph.n_points))
    sub = mapper_distance(graph, shuffled, coupling="free", max_points=150, seed=0)
    assert sub < mapper_distance(graph, shuffled, max_points=150, seed=0)


def test_assignment_agreement_reduces_to_ari_and_vi_on_partitions():
    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 4, 60), rng.integers(0, 3, 60)
    na = [np.flatnonzero(la == k) for k in range(4)]
    nb = [np.flatnonzero(lb == k) for k in range(3)]
    out = assignment_agreement(na, nb, n_points=60)
    assert out["ari"] == pytest.approx(adjusted_rand_score(la, lb))

    def h(lab):
        p = np.bincount(lab) / len(lab)
        p = p[p > 0]
        return -(p * np.log(p)).sum()

    vi = h(la) + h(lb) - 2 * mutual_info_score(la, lb)
    assert out["vi"] == pytest.approx(vi)
    assert out["nvi"] == pytest.approx(vi / np.log(60))
    same = assignment_agreement(na, na, n_points=60)
    assert same["ari"] == 1.0 and same["vi"] == 0.0


def test_cover_cells_handle_overlaps_and_uncovered_points():
    cells = cover_cells([[0, 1, 2], [2, 3]], n_points=6)
    # 0,1 in node 0 only; 2 in both (its own cell); 3 in node 1 only; 4 and 5 singletons
    assert cells[0] == cells[1]
    assert len({cells[0], cells[2], cells[3], cells[4], cells[5]}) == 5


def test_matrix_symmetric_zero_diagonal_and_round_trip(graph):
    graphs = {"a": graph, "b": perturbed(graph, 0.05, 1), "c": perturbed(graph, 0.3, 2)}
    for method in ("coot", "vi", "ari"):
        m = mapper_distance_matrix(graphs, method)
        np.testing.assert_allclose(m.values, m.values.T)
        np.testing.assert_allclose(np.diag(m.values), 0.0)
        assert m.values[0, 1] < m.values[0, 2]
        back = MapperDistanceMatrix.from_dict(m.to_dict())
        np.testing.assert_array_equal(back.values, m.values)
        assert back.layers == ("a", "b", "c") and back.method == method
    for i, j in itertools.combinations(range(3), 2):
        names = list(graphs)
        m = mapper_distance_matrix(graphs, "coot")
        assert m.values[i, j] == pytest.approx(mapper_distance(graphs[names[i]],
                                                               graphs[names[j]]))


def test_graphs_on_different_points_are_rejected(graph):
    rng = np.random.default_rng(0)
    other = build_mapper(rng.normal(size=(50, 3)), intervals=4)
    with pytest.raises(ShapeError, match="same points"):
        mapper_distance(graph, other)
    with pytest.raises(ShapeError, match="same points"):
        assignment_agreement(graph, other)


def _incidence_distance(a, b, rows_a, rows_b):
    """Independent fixed-coupling distance (omega = incidence, node weights = size) on the
    paired rows: the node cost written out point by point, the node coupling by ot.emd2."""
    import ot

    def incidence(g):
        m = np.zeros((g.n_points, len(g.nodes)))
        for j, node in enumerate(g.nodes):
            m[list(node.members), j] = 1.0
        return m

    ia, ib = incidence(a)[rows_a], incidence(b)[rows_b]
    cost = ((ia[:, :, None] - ib[:, None, :]) ** 2).mean(axis=0)
    nu_a = np.array([n.size for n in a.nodes], float)
    nu_b = np.array([n.size for n in b.nodes], float)
    return float(np.sqrt(ot.emd2(nu_a / nu_a.sum(), nu_b / nu_b.sum(), cost)))


def test_graphs_on_different_samples_are_refused_or_aligned_on_common_ids():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(60, 4)) * 0.4 + c for c in np.eye(4)[:2] * 5])
    ids = rng.permutation(1000)[:120]  # dataset indices of the 120 images
    a = build_mapper(X[:80], intervals=6, overlap=0.3, sample_ids=ids[:80])
    b = build_mapper(X[40:], intervals=6, overlap=0.3, sample_ids=ids[40:])
    assert a.n_points == b.n_points == 80  # same size, different samples
    with pytest.raises(ShapeError, match="cover different samples"):
        mapper_distance(a, b)
    with pytest.raises(ShapeError, match="40 in common"):
        assignment_agreement(a, b)
    got = mapper_distance(a, b, omega="incidence", align="common")
    common = np.arange(40, 80)  # rows 40..79 of A are rows 0..39 of B
    assert got == pytest.approx(_incidence_distance(a, b, common, common - 40), rel=1e-9)
    assert assignment_agreement(a, b, align="common")["n_compared"] == 40


def test_same_samples_in_another_order_are_paired_by_id():
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(size=(50, 3)) * 0.3 + c for c in np.eye(3)[:2] * 4])
    ids = np.arange(100) + 500
    perm = rng.permutation(100)
    a = build_mapper(X, intervals=5, overlap=0.3, sample_ids=ids)
    b = build_mapper(X[perm], intervals=5, overlap=0.3, sample_ids=ids[perm])
    inverse = np.argsort(perm)  # row of B holding A's point i
    expected = _incidence_distance(a, b, np.arange(100), inverse)
    assert mapper_distance(a, b, omega="incidence") == pytest.approx(expected, rel=1e-9)
    # graphs without ids cannot be checked: same size is all that is asked, as before
    bare = dataclasses.replace(b, sample_ids=None)
    assert np.isfinite(mapper_distance(a, bare))


def test_sample_ids_round_trip_and_come_from_the_store(tmp_path):
    import torch

    from deepprofile.capture.runner import capture_to_store
    from deepprofile.data import ArrayDataset
    from deepprofile.mapper import MapperGraphResult, mapper_from_store
    from deepprofile.models.small import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(widths=(4, 8, 8)).eval()
    data = ArrayDataset(np.random.default_rng(0).normal(size=(30, 1, 12, 12)).astype(np.float32),
                        np.arange(30) % 3)
    store = capture_to_store(model, data, ["layer2"], tmp_path / "s.zarr",
                             reductions="positions:2", quiet=True, indices=np.arange(30)[::-1])
    g = mapper_from_store(store, "layer2", intervals=4)
    np.testing.assert_array_equal(g.sample_ids, np.repeat(np.asarray(store.indices), 2))
    back = MapperGraphResult.from_dict(g.to_dict())
    np.testing.assert_array_equal(back.sample_ids, g.sample_ids)
    assert mapper_distance(g, back) == 0.0
