"""Persistence: H0 against the minimum spanning tree, a circle's H1, summaries, cutoff."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from deepprofile.errors import NonFiniteActivationError, ShapeError
from deepprofile.topology.clouds import cloud_from_array
from deepprofile.topology.persistence import (
    PersistenceDiagrams,
    VietorisRips,
    betti_curve,
    count_above,
    persistence,
    persistence_entropy,
    summarize_diagram,
    total_persistence,
)


@pytest.mark.parametrize("seed,n,d", [(0, 60, 2), (1, 150, 5), (2, 300, 16)])
def test_h0_deaths_are_mst_edge_lengths(seed: int, n: int, d: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, d))
    dg = persistence(x, (0,))
    h0 = dg[0]
    assert dg.n_essential(0) == 1 and np.all(h0[:, 0] == 0)
    mst = minimum_spanning_tree(squareform(pdist(x))).data
    # giotto-ph stores filtration values in float32
    np.testing.assert_allclose(np.sort(dg.finite(0)[:, 1]), np.sort(mst), rtol=1e-6)


def test_circle_has_one_long_h1_feature() -> None:
    n, r = 99, 2.0  # n divisible by 3: the cycle dies exactly at the equilateral chord r*sqrt(3)
    t = 2 * np.pi * np.arange(n) / n
    x = np.column_stack([r * np.cos(t), r * np.sin(t)])
    h1 = persistence(x, (0, 1))[1]
    life = h1[:, 1] - h1[:, 0]
    big = np.argmax(life)
    assert h1[big, 0] == pytest.approx(2 * r * np.sin(np.pi / n), rel=1e-5)  # edge spacing
    assert h1[big, 1] == pytest.approx(r * np.sqrt(3), rel=1e-5)
    assert np.sum(life > 0.05 * life[big]) == 1


def test_noisy_circle_still_has_one_feature_above_noise() -> None:
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 300)
    x = np.column_stack([np.cos(t), np.sin(t)]) + rng.normal(scale=0.03, size=(300, 2))
    dg = persistence(x, (0, 1))
    assert count_above(dg[1], 0.5) == 1
    # random angles and noise: the death moves off r*sqrt(3) by up to ~10%
    assert dg[1][np.argmax(dg[1][:, 1] - dg[1][:, 0]), 1] == pytest.approx(np.sqrt(3), rel=0.1)


def test_summaries_against_hand_values_and_giotto() -> None:
    dgm = np.array([[0.0, 1.0], [0.5, 2.0], [1.0, 1.5], [0.0, np.inf]])
    grid = np.array([0.0, 0.75, 1.25, 1.75, 3.0])
    np.testing.assert_array_equal(betti_curve(dgm, grid), [2, 3, 3, 2, 1])
    assert total_persistence(dgm) == pytest.approx(1.0 + 1.5 + 0.5)
    assert total_persistence(dgm, 2) == pytest.approx(1.0 + 2.25 + 0.25)
    life = np.array([1.0, 1.5, 0.5])
    p = life / life.sum()
    assert persistence_entropy(dgm) == pytest.approx(-(p * np.log2(p)).sum())
    assert count_above(dgm, 0.75) == 3  # two finite + the infinite one
    from gtda.diagrams import PersistenceEntropy

    finite = np.column_stack([dgm[:3], np.zeros(3)])[None]
    ref = PersistenceEntropy(normalize=False).fit_transform(finite)[0, 0]
    assert persistence_entropy(dgm) == pytest.approx(ref, rel=1e-9)
    summary = summarize_diagram(dgm, 1, noise=0.75, grid=grid)
    assert summary.n_features == 3 and summary.n_essential == 1
    assert summary.max_persistence == pytest.approx(1.5)
    assert summary.betti_curve == (2, 3, 3, 2, 1)
    assert type(summary).from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_cutoff_truncates_and_keeps_early_features() -> None:
    x = np.random.default_rng(4).normal(size=(200, 3))
    full = persistence(x)
    cut = VietorisRips((0, 1), cutoff_quantile=0.2).compute(x)
    thresh = cut.thresh
    assert thresh == pytest.approx(np.quantile(pdist(x), 0.2), rel=1e-9)
    assert cut.params["cutoff_quantile"] == 0.2
    for dim in (0, 1):
        assert np.all(cut.finite(dim)[:, 1] <= thresh + 1e-6)
        early = full[dim][full[dim][:, 1] < thresh * (1 - 1e-6)]
        early_cut = cut[dim][cut[dim][:, 1] < thresh * (1 - 1e-6)]
        np.testing.assert_allclose(np.sort(early_cut, axis=0), np.sort(early, axis=0))


def test_h2_of_a_sphere() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dg = persistence(x, (0, 1, 2))
    h2 = dg[2]
    assert dg.dims == (0, 1, 2)
    assert count_above(h2, 0.5) == 1


def test_diagrams_round_trip_through_json_with_infinite_death() -> None:
    cloud = cloud_from_array(np.random.default_rng(0).normal(size=(40, 3)), layer="L")
    dg = VietorisRips().compute(cloud)
    again = PersistenceDiagrams.from_dict(json.loads(json.dumps(dg.to_dict())))
    assert again.layer == "L" and np.isinf(again[0][:, 1]).sum() == 1
    for dim in (0, 1):
        np.testing.assert_array_equal(again[dim], dg[dim])
    assert again.params == dg.params and again.cloud["n_points"] == 40


def test_persistence_errors() -> None:
    with pytest.raises(ShapeError, match="at least"):
        persistence(np.zeros((2, 3)))
    bad = np.ones((10, 2))
    bad[3, 0] = np.inf
    with pytest.raises(NonFiniteActivationError):
        persistence(bad)
    with pytest.raises(ShapeError, match="2-D"):
        persistence(np.zeros(10))


def test_fit_keeps_layer_names() -> None:
    rng = np.random.default_rng(0)
    clouds = {name: cloud_from_array(rng.normal(size=(30, 2)), layer=name) for name in "ab"}
    rips = VietorisRips().fit(clouds)
    assert list(rips.diagrams_) == ["a", "b"]
