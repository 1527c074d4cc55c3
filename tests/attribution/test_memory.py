"""The memory budget: parsing, the probe forward, and identical results under a tiny budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.attribution import memory as mem
from deepprofile.attribution.boundary import big_attribute, find_boundary
from deepprofile.attribution.methods import attribute
from deepprofile.attribution.robustness import robustness_table, topk_attack
from deepprofile.attribution.sde import sde_attribute
from deepprofile.errors import DeepProfileError

TINY = 1  # one byte: every pass holds a single sample


@pytest.mark.parametrize(("text", "expected"), [
    ("2GB", 2 * 1000**3), ("512MiB", 512 * 1024**2), ("1.5g", int(1.5 * 1024**3)),
    (3000, 3000), ("none", None), (None, None), (0, None), (float("inf"), None),
])
def test_parse_budget(text, expected):
    assert mem.parse_budget(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2XB", -5, "-1GB"])
def test_parse_budget_rejects_nonsense(bad):
    with pytest.raises(DeepProfileError, match="memory budget"):
        mem.parse_budget(bad)


def test_budget_context_is_restored():
    before = mem.current_budget()
    with mem.memory_budget("1MB") as b:
        assert b == mem.current_budget() == 1000**2
        with mem.memory_budget("none"):
            assert mem.current_budget() is None
        assert mem.current_budget() == 1000**2
    assert mem.current_budget() == before == mem.DEFAULT_BUDGET


def test_probe_counts_every_leaf_output():
    # input 4 floats, Linear -> 3, ReLU -> 3, Linear -> 2: (4 + 3 + 3 + 2) * 4 bytes
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
    assert mem.probe_bytes(model, torch.zeros(1, 4)) == 12 * 4
    assert mem.per_sample_bytes(model, torch.zeros(7, 4), factor=3.0) == 12 * 4 * 3
    with mem.memory_budget(12 * 4 * 3 * 5):
        assert mem.samples_per_pass(model, torch.zeros(1, 4)) == 5
        assert mem.bounded_batch(model, torch.zeros(1, 4), 64) == 5
        assert mem.bounded_batch(model, torch.zeros(1, 4), 2) == 2
    with mem.memory_budget(None):
        assert mem.samples_per_pass(model, torch.zeros(1, 4)) is None


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_probe_removes_its_hooks_when_the_forward_raises():
    model = nn.Sequential(nn.Linear(4, 3), Boom(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="boom"):
        mem.probe_bytes(model, torch.zeros(1, 4))
    assert all(not m._forward_hooks for m in model.modules())


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_attributions_identical_under_a_tiny_budget(small_resnet, images):
    kw = {"target": "prediction", "seed": 3}
    with mem.memory_budget(None):
        ig = attribute(small_resnet, images, method="ig", n_steps=8, **kw)
        sal = attribute(small_resnet, images, method="saliency", **kw)
        cam = attribute(small_resnet, images, method="gradcam", layer="layer2", **kw)
        sde = sde_attribute(small_resnet, images, sigma=0.3, n_draws=3, n_steps=6, **kw)
        search = find_boundary(small_resnet, images, steps=4)
        big = big_attribute(small_resnet, images, n_steps=6, search=search)
    with mem.memory_budget(TINY):
        ig_t = attribute(small_resnet, images, method="ig", n_steps=8, **kw)
        sal_t = attribute(small_resnet, images, method="saliency", **kw)
        cam_t = attribute(small_resnet, images, method="gradcam", layer="layer2", **kw)
        sde_t = sde_attribute(small_resnet, images, sigma=0.3, n_draws=3, n_steps=6, **kw)
        search_t = find_boundary(small_resnet, images, steps=4)
        big_t = big_attribute(small_resnet, images, n_steps=6, search=search_t)
    assert "memory" not in ig.params
    assert ig_t.params["memory"]["internal_batch_size"] == 1
    assert ig_t.params["memory"]["batch_size"] == 1
    for a, b in [(ig, ig_t), (sal, sal_t), (cam, cam_t), (sde, sde_t), (big, big_t)]:
        _close(a.attributions, b.attributions)
    _close(sde.variance, sde_t.variance)
    _close(search.points, search_t.points)


def test_robustness_identical_under_a_tiny_budget(small_resnet, images):
    x, t = images[:3], torch.tensor([0, 1, 2])

    def ig(inp, tgt):
        return attribute(small_resnet, inp, method="ig", target=tgt, n_steps=4).tensor()

    def run():
        adv, moved = topk_attack(small_resnet, x, t, 0.1, steps=3)
        table = robustness_table(small_resnet, x, t, {"ig": ig}, eps=0.1, attack_steps=2,
                                 sensitivity_samples=1, infidelity_samples=4)
        return adv, moved, table

    with mem.memory_budget(None):
        adv, moved, table = run()
    with mem.memory_budget(TINY):
        adv_t, moved_t, table_t = run()
    _close(adv, adv_t)
    assert (moved == moved_t).all()
    _close(table.infidelity["ig"]["values"], table_t.infidelity["ig"]["values"], 1e-4)
    _close(table.sensitivity["ig"]["values"], table_t.sensitivity["ig"]["values"], 1e-4)
    for r, r_t in zip(table.rows, table_t.rows, strict=True):
        _close(r["spearman_mean"], r_t["spearman_mean"], 1e-4)


def test_stochastic_methods_stay_seeded_under_a_budget(small_resnet, images):
    # a split forced by the budget gives another draw, but the same one every time
    with mem.memory_budget(TINY):
        a = attribute(small_resnet, images, method="smoothgrad", nt_samples=4, seed=1)
        b = attribute(small_resnet, images, method="smoothgrad", nt_samples=4, seed=1)
    assert a.params["memory"]["nt_samples_batch_size"] == 1
    np.testing.assert_array_equal(a.attributions, b.attributions)
