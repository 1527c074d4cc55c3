"""Diagram distances: identities, hand-computed values, independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.topology.distances import (
    METRICS,
    DiagramDistance,
    _wasserstein_lsa,
    _wasserstein_pot,
    bottleneck,
    clean_diagram,
    cross_distance_matrix,
    distance_matrix,
    landscape_distance,
    sliced_wasserstein,
    wasserstein,
)
from deepprofile.topology.persistence import persistence


def _random_diagram(rng: np.random.Generator, n: int, common_birth: bool = False) -> np.ndarray:
    birth = np.zeros(n) if common_birth else rng.uniform(0, 2, n)
    return np.column_stack([birth, birth + rng.exponential(size=n)])


@pytest.mark.parametrize("metric", METRICS)
def test_metric_identities(metric: str) -> None:
    rng = np.random.default_rng(0)
    a, b, c = (_random_diagram(rng, n) for n in (30, 25, 40))
    dist = DiagramDistance(metric)
    assert dist(a, a) == pytest.approx(0.0, abs=1e-9)
    assert dist(a, b) == pytest.approx(dist(b, a), rel=1e-9, abs=1e-12)
    assert dist(a, b) > 0 and dist(a, c) > 0
    # empty against non-empty is positive, empty against empty is zero
    empty = np.zeros((0, 2))
    assert dist(empty, empty) == 0.0 and dist(a, empty) > 0


@pytest.mark.parametrize(
    "a,b,bott,w1,w2",
    [
        # match (0,4)-(0,3.5) at 0.5, send (1,2) to the diagonal at 0.5
        ([[0, 4], [1, 2]], [[0, 3.5]], 0.5, 1.0, np.sqrt(0.5)),
        # the same with births that differ (general solver, not the H0 shortcut)
        ([[1, 5], [2, 3]], [[1.5, 5.5]], 0.5, 1.0, np.sqrt(0.5)),
        # far apart: both points go to the diagonal (0.5 each) rather than match (5)
        ([[0, 1]], [[5, 6]], 0.5, 1.0, np.sqrt(0.5)),
        # (0,10)-(0,8) at 2 and (0,2) to the diagonal at 1
        ([[0, 10]], [[0, 2], [0, 8]], 2.0, 3.0, np.sqrt(5.0)),
    ],
)
def test_bottleneck_and_wasserstein_hand_values(a, b, bott, w1, w2) -> None:
    a, b = np.array(a, float), np.array(b, float)
    assert bottleneck(a, b) == pytest.approx(bott, rel=1e-12)
    assert wasserstein(a, b, 1) == pytest.approx(w1, rel=1e-9)
    assert wasserstein(a, b, 2) == pytest.approx(w2, rel=1e-9)
    assert _wasserstein_pot(a, b, 2) == pytest.approx(w2, rel=1e-9)
    assert _wasserstein_lsa(a, b, 2) == pytest.approx(w2, rel=1e-9)


def test_exact_wasserstein_solvers_agree() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        common = bool(rng.integers(2))
        a = _random_diagram(rng, int(rng.integers(1, 40)), common)
        b = _random_diagram(rng, int(rng.integers(1, 40)), common)
        for p in (1.0, 2.0):
            ref = _wasserstein_pot(a, b, p)
            assert _wasserstein_lsa(a, b, p) == pytest.approx(ref, rel=1e-9)
            assert wasserstein(a, b, p) == pytest.approx(ref, rel=1e-9)  # H0 DP when common
            # hera's auction is a (1 + delta) approximation
            approx = wasserstein(a, b, p, backend="hera", delta=0.01)
            assert ref <= approx * (1 + 1e-9) <= ref * 1.01 + 1e-9


def test_bottleneck_matches_persim() -> None:
    persim = pytest.importorskip("persim")  # installed with ripser (the bench extra)

    rng = np.random.default_rng(2)
    for _ in range(10):
        a, b = _random_diagram(rng, 15), _random_diagram(rng, 20)
        assert bottleneck(a, b) == pytest.approx(persim.bottleneck(a, b), rel=1e-9)


def test_sliced_wasserstein_matches_persim() -> None:
    persim = pytest.importorskip("persim")

    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = _random_diagram(rng, 20), _random_diagram(rng, 12)
        # persim evaluates the directions in float32
        assert sliced_wasserstein(a, b, 50) == pytest.approx(
            persim.sliced_wasserstein(a, b, M=50), rel=1e-5)


def test_landscape_distance_of_one_tent() -> None:
    # one point (0, 2): a tent of height 1, integral of its square = 2/3
    a = np.array([[0.0, 2.0]])
    empty = np.zeros((0, 2))
    assert landscape_distance(a, empty, 2, n_bins=2001) == pytest.approx(np.sqrt(2 / 3), rel=1e-4)
    assert landscape_distance(a, empty, 1, n_bins=2001) == pytest.approx(1.0, rel=1e-4)
    # two nested points: second landscape is the smaller tent
    b = np.array([[0.0, 2.0], [0.5, 1.5]])
    expected = np.sqrt(2 * 0.5**3 / 3)  # only the second layer differs: tent of height 0.5
    assert landscape_distance(a, b, 2, n_bins=4001) == pytest.approx(expected, rel=1e-3)


def test_infinite_deaths_are_dropped_or_capped() -> None:
    a = np.array([[0.0, 1.0], [0.0, np.inf]])
    b = np.array([[0.0, 2.0], [0.0, np.inf]])
    assert bottleneck(clean_diagram(a), clean_diagram(b)) == pytest.approx(1.0)
    dist = DiagramDistance("bottleneck")
    assert dist(a, b) == pytest.approx(1.0)  # the shared infinite H0 point costs nothing
    assert dist(a, b, cap_a=3.0, cap_b=3.0) == pytest.approx(1.0)
    # with a cutoff the surviving class is capped: (0, inf) -> (0, 3) vs nothing
    assert dist(np.array([[0.0, np.inf]]), np.zeros((0, 2)), cap_a=3.0) == pytest.approx(1.5)


def test_layer_matrices() -> None:
    rng = np.random.default_rng(5)
    dgs = [persistence(rng.normal(size=(40, 3)) * s) for s in (1.0, 1.5, 3.0)]
    for metric in METRICS:
        mat = distance_matrix(dgs, 1, metric)
        assert mat.shape == (3, 3)
        np.testing.assert_allclose(mat, mat.T)
        np.testing.assert_array_equal(np.diag(mat), 0)
        cross = cross_distance_matrix(dgs, dgs[:2], 1, metric)
        assert cross.shape == (3, 2)
        np.testing.assert_allclose(cross, mat[:, :2], atol=1e-12)
    named = {f"l{i}": d for i, d in enumerate(dgs)}
    np.testing.assert_allclose(distance_matrix(named, 0), distance_matrix(dgs, 0))
    with pytest.raises(Exception, match="H2"):
        DiagramDistance().between(dgs[0], dgs[1], 2)


def test_params_say_which_are_exact() -> None:
    assert DiagramDistance("bottleneck").params()["exact"] is True
    assert DiagramDistance("wasserstein").params()["exact"] is True
    assert DiagramDistance("wasserstein", backend="hera").params()["exact"] is False
    assert DiagramDistance("sliced_wasserstein").params()["exact"] is False
    with pytest.raises(ValueError, match="Unknown diagram metric"):
        DiagramDistance("euclid")
