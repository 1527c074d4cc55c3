"""Robustness metrics on hand-made maps, and the comparison table against captum's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.metrics import sensitivity_max
from torch import nn

from deepprofile.attribution.methods import attribute, predict, seeded
from deepprofile.attribution.robustness import (
    RobustnessResult,
    center_of_mass,
    com_shift,
    compare_maps,
    kendall,
    random_perturbation,
    robustness_table,
    spearman,
    to_maps,
    topk_attack,
    topk_intersection,
    total_variation,
)


def test_topk_intersection_by_hand():
    a = np.array([[4.0, 3.0], [2.0, 1.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    # top-2 of a: positions {0, 1}; of b: {3, 1} -> one shared of two
    assert topk_intersection(a, b, 2) == 0.5
    assert topk_intersection(a, a, 2) == 1.0
    assert topk_intersection(a, b, 0.25) == 0.0  # k = 1: position 0 vs position 3
    assert topk_intersection(a, b, 4) == 1.0
    with pytest.raises(ValueError):
        topk_intersection(a, b, 5)


def test_rank_correlations_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 2.0, 4.0, 3.0])
    # Spearman: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert spearman(a, b) == pytest.approx(0.8)
    # Kendall: 6 pairs, 5 concordant, 1 discordant -> 4 / 6
    assert kendall(a, b) == pytest.approx(4 / 6)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_center_of_mass_and_shift_by_hand():
    m = np.zeros((3, 3))
    m[0, 0], m[2, 2] = 1.0, -3.0  # absolute values weigh
    np.testing.assert_allclose(center_of_mass(m), [1.5, 1.5])
    single = np.zeros((3, 3))
    single[0, 0] = 5.0
    assert com_shift(m, single) == pytest.approx(math.sqrt(2 * 1.5**2))
    assert np.isnan(center_of_mass(np.zeros((2, 2)))).all()


def test_total_variation_by_hand():
    m = np.array([[0.0, 1.0], [0.0, 1.0]])
    # vertical differences 0 + 0, horizontal |1 - 0| twice: TV = 2; sum |m| = 2
    assert total_variation(m, normalize=False) == 2.0
    assert total_variation(m) == 1.0
    assert total_variation(np.full((4, 4), 3.0)) == 0.0
    checker = np.indices((4, 4)).sum(0) % 2 * 1.0
    assert total_variation(checker) > total_variation(np.outer(np.ones(4), np.arange(4.0)))


def test_compare_maps_and_to_maps():
    a = np.random.default_rng(0).random((3, 1, 5, 5)) - 0.5
    maps = to_maps(a)
    np.testing.assert_allclose(maps, np.abs(a)[:, 0])
    same = compare_maps(maps, maps, k=5)
    np.testing.assert_allclose(same["topk_intersection"], 1.0)
    np.testing.assert_allclose(same["spearman"], 1.0)
    np.testing.assert_allclose(same["kendall"], 1.0)
    np.testing.assert_allclose(same["com_shift"], 0.0)


def test_random_perturbation_stays_in_the_ball_and_keeps_labels(trained_resnet):
    model, x, _ = trained_resnet
    px, ok = random_perturbation(model, x[:8], 0.1, seed=0)
    assert float((px - x[:8]).abs().max()) <= 0.1 + 1e-6
    assert ok.all()
    assert torch.equal(predict(model, px), predict(model, x[:8]))


def test_topk_attack_respects_eps_and_prediction(trained_resnet):
    model, x, _ = trained_resnet
    x = x[:4]
    t = predict(model, x)
    adv, moved = topk_attack(model, x, t, 0.2, k=0.1, steps=6)
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6
    assert moved.any()
    assert torch.equal(predict(model, adv), t)


def test_table_against_captum_and_identities(trained_resnet):
    model, x, _ = trained_resnet
    x = x[:4]
    t = predict(model, x)

    def sal(inp, tgt):
        return attribute(model, inp, method="saliency", target=tgt).tensor()

    def ig(inp, tgt):
        return attribute(model, inp, method="ig", target=tgt, n_steps=8).tensor()

    res = robustness_table(model, x, t, {"saliency": sal, "ig": ig}, eps=0.05,
                           attack_steps=3, sensitivity_samples=2, infidelity_samples=4, seed=1)
    assert [(r["method"], r["perturbation"]) for r in res.rows] == [
        ("saliency", "random"), ("saliency", "topk_attack"),
        ("ig", "random"), ("ig", "topk_attack"),
    ]
    for row in res.rows:
        assert 0 <= row["topk_intersection_mean"] <= 1
        assert -1 <= row["spearman_mean"] <= 1
    # max-sensitivity is captum's, with the same seed and perturbations
    with seeded(1 + 101 * 0):
        expected = sensitivity_max(
            lambda inp, target: (sal(inp[0], target),), x, perturb_radius=0.05,
            n_perturb_samples=2, target=t)
    np.testing.assert_allclose(res.sensitivity["saliency"]["values"], expected.numpy(),
                               rtol=1e-6)
    # the table's TV equals total_variation of the clean maps
    clean = to_maps(sal(x, t))
    np.testing.assert_allclose(res.total_variation["saliency"]["values"],
                               [total_variation(m) for m in clean])
    table = res.table()
    assert {r["method"] for r in table} == {"saliency", "ig"}
    assert set(table[0]) >= {"random.topk_intersection", "topk_attack.spearman",
                             "max_sensitivity", "infidelity", "total_variation"}
    back = RobustnessResult.from_dict(res.to_dict())
    assert back.table() == table


def test_zero_radius_perturbation_changes_nothing(trained_resnet):
    model, x, _ = trained_resnet
    x = x[:3]
    t = predict(model, x)
    def sal(inp, tgt):
        return attribute(model, inp, method="saliency", target=tgt).tensor()

    res = robustness_table(
        model, x, t, {"sal": sal}, eps=0.0, perturbations=("random",), sensitivity_samples=0,
        infidelity_samples=0)
    row = res.rows[0]
    assert row["topk_intersection_mean"] == 1.0 and row["com_shift_mean"] == 0.0
    assert row["spearman_mean"] == pytest.approx(1.0)


class _KnifeEdge(nn.Module):
    """Class 0 only at exactly ``x0`` (any perturbation flips it to 1); class 1 elsewhere."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x - self.x0).abs().flatten(1).sum(1)
        return torch.stack([-dist, torch.full_like(dist, -1e-6)], dim=1)


def test_rows_average_only_images_whose_prediction_was_kept():
    """Hand-known answer: the explainer's map depends only on the predicted class (one
    ranking for class 0, the reverse for class 1), so kept images compare at top-k 1 and
    Spearman 1, and the one image that flips under every try at 0 and -1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 4, 4, generator=gen) * 3
    model = _KnifeEdge(x[2].clone()).eval()
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4)

    def explain(inp: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
        pred = model(inp).argmax(1).view(-1, 1, 1, 1)
        return torch.where(pred == 0, ramp, 15.0 - ramp + 0.5)

    res = robustness_table(model, x, torch.zeros(6, dtype=torch.long), {"cls": explain},
                           eps=0.05, k=0.25, perturbations=("random",),
                           sensitivity_samples=0, infidelity_samples=0)
    (row,) = res.rows
    assert row["n_kept"] == 5 and row["n_images"] == 6
    assert row["topk_intersection_mean"] == pytest.approx(1.0)
    assert row["spearman_mean"] == pytest.approx(1.0)
    assert res.perturbations["random"]["prediction_kept"] == [True, True, False, True, True,
                                                              True]
    assert np.isnan(res.per_image["cls"]["random.topk_intersection"][2])
    assert res.table()[0]["random.n_kept"] == 5
