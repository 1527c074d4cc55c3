"""Manifold alignment on planted subspaces, and per-mapper-node statistics by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.attribution.manifold import (
    AlignmentResult,
    ManifoldAlignment,
    alignment,
    manifold_alignment,
    node_attribution_stats,
    random_baseline,
    select_node_rows,
    tangent_basis,
)
from deepprofile.errors import EmptyDatasetError


def planted(d: int = 200, k: int = 5, n: int = 300, seed: int = 0):
    """Points on a k-dimensional linear subspace of R^d (orthonormal basis Q)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    q = q.T  # (k, d)
    coeffs = rng.standard_normal((n, k))
    return coeffs @ q, q, rng


def test_vector_inside_the_planted_subspace_has_alignment_one():
    ref, q, rng = planted()
    est = ManifoldAlignment(n_neighbors=20, dim=5).fit(ref)
    points = ref[:10]  # in the reference set: they are not their own neighbours
    vectors = rng.standard_normal((10, 5)) @ q
    np.testing.assert_allclose(est.score(points, vectors), 1.0, atol=1e-8)
    orth = rng.standard_normal((10, 200))
    orth -= (orth @ q.T) @ q  # remove the in-subspace part
    np.testing.assert_allclose(est.score(points, orth), 0.0, atol=1e-8)


def test_random_vectors_are_near_sqrt_k_over_d():
    ref, q, rng = planted(d=400, k=8, n=300)
    est = ManifoldAlignment(n_neighbors=24, dim=8).fit(ref)
    points = ref[:40]
    scores = est.score(points, rng.standard_normal((40, 400)))
    base = random_baseline(8, 400)
    assert base == pytest.approx(np.sqrt(8 / 400))
    assert scores.mean() == pytest.approx(base, rel=0.12)
    assert est.random_scores(points, n_random=16).mean() == pytest.approx(base, rel=0.12)


def test_tangent_basis_is_orthonormal_and_spans_the_plane():
    ref, q, _ = planted(d=30, k=3, n=50)
    basis = tangent_basis(ref[:20], 3)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-10)
    # same span as the planted basis: projecting Q onto it loses nothing
    np.testing.assert_allclose(np.linalg.norm(q @ basis.T, axis=1), 1.0, atol=1e-10)
    assert alignment(np.zeros(30), basis) != alignment(np.zeros(30), basis)  # NaN for zero
    with pytest.raises(ValueError):
        tangent_basis(ref[:3], 3)


def test_manifold_alignment_result():
    ref, q, rng = planted(d=50, k=4, n=120)
    res = manifold_alignment(ref[:6], rng.standard_normal((6, 4)) @ q, ref, method="m",
                             n_neighbors=10, dim=4, sample_indices=range(6))
    assert res.mean == pytest.approx(1.0)
    assert res.ratio == pytest.approx(1.0 / np.sqrt(4 / 50))
    back = AlignmentResult.from_dict(res.to_dict())
    assert back == res
    with pytest.raises(EmptyDatasetError):
        ManifoldAlignment(n_neighbors=200).fit(ref)


def test_node_statistics_by_hand():
    maps = np.zeros((4, 4, 4))
    maps[0, 0, 0] = 2.0  # row 10
    maps[1, 3, 3] = 4.0  # row 11
    maps[2] = 1.0        # row 12
    maps[3, 1, 2] = 1.0  # row 13
    rows = [10, 11, 12, 13]
    members = {"a": [10, 11], "b": [12, 99], "c": [99]}
    labels = {10: 1, 11: 1, 12: 0, 13: 2, 99: 0}
    stats = node_attribution_stats(maps, rows, members, labels=labels, alignments=[0.1, 0.3, 0.5,
                                   0.7], layer="layer2", method="ig", pooled_size=4)
    a, b, c = stats.nodes["a"], stats.nodes["b"], stats.nodes["c"]
    assert (a["n_members"], a["n_explained"], a["rows"]) == (2, 2, [10, 11])
    np.testing.assert_allclose(a["mean_map"], (maps[0] + maps[1]) / 2)
    assert a["mean_abs"] == pytest.approx((2 + 4) / 32)
    assert a["alignment"] == pytest.approx(0.2)
    np.testing.assert_allclose(a["center_of_mass"], [1.5, 1.5])  # (0,0) and (3,3)
    assert a["label_counts"] == {"1": 2}
    assert b["n_explained"] == 1 and b["label_counts"] == {"0": 2}
    assert b["concentration"] == pytest.approx(2 / 16)  # top 10% of 16 px = 2 px of a flat map
    assert c["n_explained"] == 0 and "mean_map" not in c
    assert stats.node_order == ["a", "b"] and stats.full_maps.shape == (2, 4, 4)
    pooled = node_attribution_stats(maps, rows, members, pooled_size=2)
    np.testing.assert_allclose(pooled.nodes["b"]["mean_map"], np.ones((2, 2)))
    assert stats.to_dict()["nodes"]["a"]["rows"] == [10, 11]


def test_select_node_rows_caps_each_node():
    members = {"a": list(range(100)), "b": [200, 201], "c": [5]}
    rows = select_node_rows(members, max_per_node=4, seed=0)
    assert {200, 201, 5} <= set(rows.tolist())
    assert len(set(rows.tolist()) & set(range(100))) <= 5  # 4 from a, maybe 5 shared with c
    assert np.array_equal(rows, select_node_rows(members, max_per_node=4, seed=0))
