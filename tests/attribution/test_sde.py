"""SDE smoothing: where the noise goes, sigma = 0, seeds, variance, hooks and modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50, resnext50_32x4d, wide_resnet50_2

from deepprofile.attribution.methods import attribute
from deepprofile.attribution.sde import (
    NotResidualError,
    ResidualNoise,
    noisy_accuracy,
    noisy_finetune,
    residual_sites,
    sde_attribute,
)
from deepprofile.capture import hook_count
from deepprofile.provenance import weights_hash


def test_sites_of_small_resnet_and_torchvision():
    from deepprofile.models.small import SmallResNet

    sites = residual_sites(SmallResNet())
    assert [s.module for s in sites] == ["layer1.branch", "layer2.branch", "layer3.branch"]
    r18 = residual_sites(resnet18(weights=None))
    assert len(r18) == 8 and r18[0].module == "layer1.0.bn2" and r18[0].kind == "basic"
    r50 = residual_sites(resnet50(weights=None))
    assert len(r50) == 16 and r50[-1].module == "layer4.2.bn3" and r50[-1].kind == "bottleneck"


@pytest.mark.slow
def test_sites_of_resnext_and_wide_resnet():
    assert len(residual_sites(resnext50_32x4d(weights=None))) == 16
    assert len(residual_sites(wide_resnet50_2(weights=None))) == 16


def test_clear_error_for_non_residual_models(images):
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(NotResidualError, match="no residual blocks.*smoothgrad"):
        residual_sites(plain)
    with pytest.raises(NotResidualError):
        sde_attribute(plain, images, sigma=0.1, n_draws=2)


@pytest.mark.slow
def test_clear_error_for_vgg():
    from torchvision.models import vgg11

    with pytest.raises(NotResidualError, match="VGG"):
        residual_sites(vgg11(weights=None, num_classes=10))


def test_additive_noise_sits_on_the_branch_before_the_addition(small_resnet, images):
    block = small_resnet.layer2
    with torch.no_grad():
        h = small_resnet.layer1(small_resnet.stem(images))
        clean_branch = block.branch(h)
        with ResidualNoise(small_resnet, 0.7, seed=3) as noise:
            noise.set_draw(2)
            noisy_out = block(h)
            eps = noise._cache[(1, tuple(clean_branch.shape[1:]))]
    dt = 1 / 3
    assert noise.dt == pytest.approx(dt)
    expected = torch.relu(block.shortcut(h) + clean_branch + 0.7 * math.sqrt(dt) * eps)
    torch.testing.assert_close(noisy_out, expected, rtol=0, atol=1e-6)
    assert eps.shape == (1, *clean_branch.shape[1:])  # one field per draw, shared by the batch


def test_multiplicative_noise_on_torchvision_basic_block():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=3).eval()
    block = model.layer1[0]
    h = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        clean = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
        with ResidualNoise(model, 0.5, mode="multiplicative", dt=0.25, seed=1) as noise:
            out = block(h)
            eps = noise._cache[(0, tuple(clean.shape[1:]))]
    expected = torch.relu(clean + 0.5 * 0.5 * eps * clean + h)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert hook_count(model) == 0


@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
@pytest.mark.parametrize("method,kw", [("ig", {"n_steps": 8}), ("saliency", {})])
def test_sigma_zero_reproduces_plain_exactly(small_resnet, images, mode, method, kw):
    plain = attribute(small_resnet, images, method=method, **kw)
    sde = sde_attribute(small_resnet, images, sigma=0.0, n_draws=4, mode=mode, method=method,
                        **kw)
    # sigma = 0 short-circuits to one draw of the plain network
    assert sde.n_draws == 1
    np.testing.assert_array_equal(sde.attributions, plain.attributions)
    assert not sde.variance.any()


@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
def test_zero_amplitude_noise_hooks_give_the_plain_map(small_resnet, images, mode):
    """The noise path itself at sigma = 0: the hooks are live (one per residual site), draw a
    non-zero noise field on every draw, add it with amplitude 0, and the maps equal the plain
    ones over several draws; the same loop at a small sigma does change the maps (so a dead
    hook path would fail here); no hook remains afterwards."""
    plain = attribute(small_resnet, images, method="saliency")
    n_sites = len(residual_sites(small_resnet))
    assert n_sites == 3 and hook_count(small_resnet) == 0
    seen: list[torch.Tensor] = []
    with ResidualNoise(small_resnet, 0.0, mode=mode, seed=5) as noise:
        assert hook_count(small_resnet) == n_sites
        for d in range(3):
            noise.set_draw(d)
            again = attribute(small_resnet, images, method="saliency")
            np.testing.assert_array_equal(again.attributions, plain.attributions)
            assert sorted(site for site, _ in noise._cache) == list(range(n_sites))
            eps = next(v for (site, _), v in noise._cache.items() if site == 0)
            assert eps.abs().max() > 0
            seen.append(eps.clone())
    assert hook_count(small_resnet) == 0 and not noise.active
    assert not torch.equal(seen[0], seen[1])  # each draw drew its own field
    maps = []
    with ResidualNoise(small_resnet, 0.05, mode=mode, seed=5) as noise:
        for d in range(3):
            noise.set_draw(d)
            maps.append(attribute(small_resnet, images, method="saliency").attributions)
    assert hook_count(small_resnet) == 0
    assert all(not np.array_equal(m, plain.attributions) for m in maps)
    assert not np.array_equal(maps[0], maps[1])
    np.testing.assert_allclose(np.mean(maps, axis=0), plain.attributions,
                               atol=0.5 * np.abs(plain.attributions).max())


def test_draws_are_reproducible_with_a_seed(small_resnet, images):
    a = sde_attribute(small_resnet, images, sigma=0.5, n_draws=3, seed=11, method="saliency")
    b = sde_attribute(small_resnet, images, sigma=0.5, n_draws=3, seed=11, method="saliency")
    c = sde_attribute(small_resnet, images, sigma=0.5, n_draws=3, seed=12, method="saliency")
    np.testing.assert_array_equal(a.attributions, b.attributions)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert not np.array_equal(a.attributions, c.attributions)
    assert a.sde == {"sigma": 0.5, "mode": "additive", "dt": pytest.approx(1 / 3), "seed": 11,
                     "n_draws_requested": 3, "n_sites": 3}


def test_mean_and_variance_over_draws(small_resnet, images):
    res = sde_attribute(small_resnet, images, sigma=0.8, n_draws=5, method="saliency",
                        keep_draws=True)
    draws = res.extra["draws"]
    assert draws.shape == (5, *images.shape)
    np.testing.assert_allclose(res.attributions, draws.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.variance, draws.var(axis=0, ddof=1), rtol=1e-4, atol=1e-9)


def test_mean_over_draws_has_lower_variance_than_single_draws(small_resnet, images):
    n_draws, n_seeds = 8, 6
    means, singles = [], []
    for s in range(n_seeds):
        res = sde_attribute(small_resnet, images, sigma=0.8, n_draws=n_draws, seed=s,
                            method="saliency", keep_draws=True)
        means.append(res.attributions)
        singles.append(res.extra["draws"])
    var_single = np.concatenate(singles).var(axis=0).mean()
    var_mean = np.stack(means).var(axis=0).mean()
    assert var_single > 0
    # averaging 8 independent draws divides the variance by about 8
    assert var_mean < 0.35 * var_single


def test_no_hook_or_noise_left_after_a_forward_that_raises(small_resnet, images):
    small_resnet.train()
    bad = torch.randn(2, 3, 16, 16)  # wrong number of channels: the stem raises
    with pytest.raises(RuntimeError):
        sde_attribute(small_resnet, bad, sigma=0.3, n_draws=2, method="saliency", target=0)
    assert hook_count(small_resnet) == 0
    assert small_resnet.training and all(m.training for m in small_resnet.modules())

    class Boom(Exception):
        pass

    small_resnet.eval()
    with torch.no_grad():
        clean = small_resnet(images)
    with pytest.raises(Boom):
        with ResidualNoise(small_resnet, 1.0) as noise:
            assert noise.active and hook_count(small_resnet) == 3
            small_resnet(images)
            raise Boom
    assert hook_count(small_resnet) == 0 and not noise.active
    with torch.no_grad():
        torch.testing.assert_close(small_resnet(images), clean, rtol=0, atol=0)


def test_noisy_accuracy(trained_resnet):
    model, x, y = trained_resnet
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    rows = noisy_accuracy(model, x, y, sigmas=(0.0, 0.5, 8.0), n_draws=3)
    assert [r["sigma"] for r in rows] == [0.0, 0.5, 8.0]
    assert rows[0]["accuracy_mean"] == clean and rows[0]["n_draws"] == 1
    assert rows[1]["n_draws"] == 3 and len(rows[1]["accuracies"]) == 3
    assert rows[2]["accuracy_mean"] < clean  # strong diffusion destroys the classifier


def test_noisy_finetune_trains_a_copy(trained_resnet):
    model, x, y = trained_resnet
    before = weights_hash(model)
    tuned, losses = noisy_finetune(model, x, y, sigma=2.0, steps=6, lr=1e-3, batch_size=32,
                                   seed=0)
    assert weights_hash(model) == before  # the original is untouched
    assert weights_hash(tuned) != before
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert hook_count(tuned) == 0 and not tuned.training and not model.training
    again, losses2 = noisy_finetune(model, x, y, sigma=2.0, steps=6, lr=1e-3, batch_size=32,
                                    seed=0)
    assert losses2 == losses and weights_hash(again) == weights_hash(tuned)
