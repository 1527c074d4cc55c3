"""The shortcut detector's pieces against independent computations (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.data_attribution.detector import (
    RelabelledSubset,
    group_effect,
    ranking_precision,
    shortcut_groups,
    shortcut_scores,
)
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import (
    DataAttributionError,
    TrakEnsemble,
    checkpoint_infos,
)


def test_shortcut_scores_are_the_contrast_of_per_image_relabelled_scores(tiny_setup, tmp_path):
    """TRAK is linear in the target gradient: the grouped contrast equals the mean of the
    per-image scores of the marked rows minus that of the unmarked rows, each image's
    margin taken for the counterfactual class."""
    test = tiny_setup["test"]
    ens = TrakEnsemble(tiny_setup["model"], checkpoint_infos(tiny_setup["checkpoints"]),
                       tiny_setup["train"], FeatureStore(tmp_path / "f.zarr"), proj_dim=20,
                       batch_size=32, chunk_size=50, quiet=True)
    labels = test.targets.numpy()
    marked = np.arange(len(test)) % 2 == 0
    other = np.flatnonzero(labels != 1)
    assert marked[other].any() and (~marked[other]).any()
    got = shortcut_scores(ens, test, labels, marked, spurious_class=1)
    per_image = ens.scores(MarginOutput(), RelabelledSubset(test, other, 1))
    m = marked[other]
    want = per_image[:, m].mean(1) - per_image[:, ~m].mean(1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    only_marked = shortcut_scores(ens, test, labels, marked, 1, contrast=False)
    np.testing.assert_allclose(only_marked, per_image[:, m].mean(1), rtol=1e-4,
                               atol=1e-6 * np.abs(want).max())


def test_relabelled_subset_and_groups():
    data = [(np.full(2, i, dtype=np.float32), i % 3) for i in range(6)]
    sub = RelabelledSubset(data, [4, 1], 2)
    assert len(sub) == 2 and sub[0][1] == 2 and sub[1][0][0] == 1
    w = shortcut_groups(np.array([True, False, True, False, False]))
    np.testing.assert_allclose(w, [[0.5, -1 / 3, 0.5, -1 / 3, -1 / 3]])
    assert w.sum() == pytest.approx(0.0)
    with pytest.raises(DataAttributionError, match="with and without"):
        shortcut_groups(np.array([True, True]))


def test_group_effect_null_is_class_matched():
    """The null mean equals the exact expectation sum_c k_c * mean(scores of class c)
    within 4 standard errors; the effect is the group's score sum."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 50)
    scores = rng.normal(size=150) + np.array([3.0, 0.0, -1.0])[labels]
    group = np.zeros(150, dtype=bool)
    group[:30] = True      # 30 from class 0
    group[50:55] = True    # 5 from class 1
    res = group_effect(scores, group, labels, n_draws=4000, seed=1)
    exact = 30 * scores[:50].mean() + 5 * scores[50:100].mean()
    assert res.effect == pytest.approx(scores[group].sum())
    assert res.null_mean == pytest.approx(exact, abs=4 * res.null_std / np.sqrt(4000))
    assert res.z == pytest.approx((res.effect - res.null_mean) / res.null_std)
    shifted = scores.copy()
    shifted[group] += 2.0  # the group's images matter more than their classmates
    assert group_effect(shifted, group, labels, n_draws=500).z > 5


def test_ranking_precision_overall_and_within_class():
    scores = np.array([9.0, 8, 7, 6, 5, 4, 3, 2])
    truth = np.array([1, 0, 1, 0, 0, 1, 1, 0], dtype=bool)
    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    p = ranking_precision(scores, truth, labels, cls=1, k=2)
    assert p.precision == 0.5 and p.base_rate == 0.5
    # class 1 holds rows 1, 4, 5, 7 ranked 8 > 5 > 4 > 2: top 2 are rows 1 and 4 (unmarked)
    assert p.precision_in_class == 0.0 and p.base_rate_in_class == 0.25
