"""Specificity and sensitivity tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepprofile.errors import ShapeError
from deepprofile.topology.clouds import cloud_from_array
from deepprofile.topology.matching import (
    SensitivityResult,
    SpecificityResult,
    remove_top_components,
    sensitivity,
    specificity,
)


def test_specificity_on_a_hand_matrix() -> None:
    dist = np.array([[0.1, 0.5, 0.9], [0.4, 0.2, 0.3], [0.2, 0.6, 0.7]])
    res = specificity(dist, ["a", "b", "c"], measure="hand")
    assert res.nearest == (0, 1, 0)
    assert res.correct == (True, True, False)
    assert res.accuracy == pytest.approx(2 / 3)
    sim = specificity(-dist, ["a", "b", "c"], higher_is_closer=True)
    assert sim.nearest == res.nearest
    # counterparts are found by name when the orders differ
    by_name = specificity(dist[:, ::-1], ["a", "b", "c"], ["c", "b", "a"])
    assert by_name.expected == (2, 1, 0) and by_name.accuracy == pytest.approx(2 / 3)
    again = SpecificityResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.accuracy == res.accuracy and again.nearest == res.nearest
    with pytest.raises(ShapeError):
        specificity(dist, ["a", "b"])


def test_remove_top_components() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([10, 5, 2, 1, 1, 1]) + 4
    reduced = remove_top_components(x, 2)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose((reduced - x.mean(axis=0)) @ vt[:2].T, 0, atol=1e-9)
    np.testing.assert_allclose(reduced.mean(axis=0), x.mean(axis=0), atol=1e-9)
    assert np.linalg.matrix_rank(reduced - reduced.mean(axis=0)) == 4
    np.testing.assert_array_equal(remove_top_components(x, 0), x)


def test_sensitivity_grows_with_k() -> None:
    rng = np.random.default_rng(1)
    # a noisy circle in the top two directions plus weaker structure below
    t = rng.uniform(0, 2 * np.pi, 200)
    x = np.column_stack([4 * np.cos(t), 4 * np.sin(t), rng.normal(size=(200, 6))
                         * np.array([2, 1.5, 1, 0.5, 0.3, 0.2])])
    cloud = cloud_from_array(x, layer="L")
    res = sensitivity(cloud, (0, 1, 2, 4, 6), metric="sliced_wasserstein")
    assert res.k_values == (0, 1, 2, 4, 6)
    assert res.distances[0][0] == 0.0 and res.distances[1][0] == 0.0
    # H0 (the spread of the cloud) moves further with every component removed
    assert res.spearman[0] > 0.85
    assert res.distances[0][-1] > 2 * res.distances[0][1]
    # H1: removing the first component flattens the circle; later removals add little,
    # so the H1 curve jumps at k = 1 and then stays high
    assert res.distances[1][1] > 0.5 * max(res.distances[1])
    assert min(res.distances[1][1:]) > 0
    assert res.cka[0] == pytest.approx(1.0)
    assert np.all(np.diff(res.cka) < 0)  # CKA falls as components go
    again = SensitivityResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.distances == res.distances and again.spearman == res.spearman


def test_sensitivity_needs_two_k_values_below_the_dimension() -> None:
    cloud = cloud_from_array(np.random.default_rng(0).normal(size=(30, 2)))
    with pytest.raises(ShapeError, match="two k values"):
        sensitivity(cloud, (0, 4, 8))
