"""Concept sub-cloud persistence test: planted geometry is detected, random masks are not."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.concepts.links_topology import TopologyTest, concept_topology_test
from deepprofile.errors import DeepProfileError, ShapeError


def _cloud(n: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 5))


def test_planted_geometry_gives_small_p():
    """Positives on a circle of radius 1 (one loop), negatives a Gaussian blob: the H1
    diagrams differ, so no shuffle of the labels reaches the observed distance."""
    rng = np.random.default_rng(3)
    theta = rng.uniform(0, 2 * np.pi, 40)
    circle = np.column_stack([np.cos(theta), np.sin(theta), np.zeros((40, 3))])
    blob = rng.normal(scale=0.3, size=(40, 5))
    X = np.vstack([circle + rng.normal(scale=0.02, size=circle.shape), blob])
    mask = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    res = concept_topology_test(X, mask, n_points=30, n_permutations=19, seed=0)
    assert res.p_value == pytest.approx(1 / 20)  # the observed beats all 19 shuffles
    assert res.statistic > max(res.null)
    assert res.n_points == 30 and res.n_positive == 40 and res.n_negative == 40


def test_random_mask_is_not_significant():
    X = _cloud(80)
    ps = []
    for seed in range(3):
        mask = np.random.default_rng(10 + seed).random(80) < 0.5
        ps.append(concept_topology_test(X, mask, n_points=25, n_permutations=19,
                                        seed=seed).p_value)
    # under the null the p-value is uniform on {1/20, ..., 1}; three seeds all below 0.1
    # would happen with probability (2/20)^3 = 0.001
    assert max(ps) > 0.1


def test_roundtrip_and_permutation_count():
    X = _cloud(40)
    mask = np.arange(40) % 2 == 0
    res = concept_topology_test(X, mask, n_points=10, n_permutations=5, homology_dims=(0,),
                                seed=1, layer="l", concept="c")
    assert len(res.null) == 5
    assert res.p_value in {k / 6 for k in range(1, 7)}
    again = TopologyTest.from_dict(res.to_dict())
    assert again == res
    # same seed, same numbers
    assert concept_topology_test(X, mask, n_points=10, n_permutations=5, homology_dims=(0,),
                                 seed=1, layer="l", concept="c") == res


def test_bad_masks_are_one_line_errors():
    X = _cloud(20)
    with pytest.raises(ShapeError, match="store's row order"):
        concept_topology_test(X, np.ones(19, bool))
    with pytest.raises(DeepProfileError, match="both classes"):
        concept_topology_test(X, np.ones(20, bool))
