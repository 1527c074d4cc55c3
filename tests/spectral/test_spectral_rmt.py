"""Random-matrix fits against known laws: MP on Gaussian vs planted low rank, power-law
exponent recovery, the MP CDF against numerical integration, random-init copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from deepprofile.spectral.rmt import (
    ModelSpectrum,
    analyze_weights,
    fit_marchenko_pastur,
    fit_power_law,
    mp_cdf,
    mp_edges,
    mp_pdf,
    random_init_copy,
)


@pytest.mark.parametrize("q", [0.2, 0.5, 1.0])
def test_mp_cdf_matches_quadrature(q):
    lo, hi = mp_edges(q, 2.0)
    xs = np.linspace(lo, hi, 7)[1:-1]
    ref = [integrate.quad(lambda t: mp_pdf(np.array([t]), q, 2.0)[0], lo, x, limit=200)[0]
           for x in xs]
    np.testing.assert_allclose(mp_cdf(xs, q, 2.0), ref, atol=1e-6)
    assert mp_cdf(np.array([hi * 1.01]), q, 2.0)[0] == 1.0


def test_mp_fit_good_on_gaussian_poor_on_planted_low_rank():
    rng = np.random.default_rng(0)
    p, n, sigma = 200, 600, 0.5
    w = sigma * rng.standard_normal((p, n))
    lam = np.linalg.eigvalsh(w @ w.T / n)
    good = fit_marchenko_pastur(lam, p / n)
    assert good.ks < 0.05
    assert abs(good.sigma2 - sigma**2) / sigma**2 < 0.05
    assert good.n_spikes <= 2
    planted = 0.3 * rng.standard_normal((p, 30)) @ rng.standard_normal((30, n)) + w
    lam2 = np.linalg.eigvalsh(planted @ planted.T / n)
    poor = fit_marchenko_pastur(lam2, p / n)
    assert poor.ks > 0.1 and poor.ks > 4 * good.ks
    assert poor.n_spikes >= 25  # the 30 planted directions stand out of the bulk


def _naive_power_law(x: np.ndarray, min_tail: int) -> tuple[float, float]:
    """Clauset's recipe written as a plain loop over candidates (independent reference)."""
    x = np.sort(x)
    best = (np.inf, np.nan, np.nan)
    for i in range(len(x) - min_tail + 1):
        tail = x[i:]
        alpha = 1 + len(tail) / np.sum(np.log(tail / x[i]))
        if not np.isfinite(alpha):
            continue
        cdf = 1 - (tail / x[i]) ** (1 - alpha)
        emp_hi = np.arange(1, len(tail) + 1) / len(tail)
        emp_lo = np.arange(len(tail)) / len(tail)
        d = max(np.max(emp_hi - cdf), np.max(cdf - emp_lo))
        if d < best[0]:
            best = (d, alpha, x[i])
    return best[1], best[2]


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5])
def test_power_law_recovers_planted_exponent(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    tail = (1 - rng.random(1500)) ** (-1 / (alpha - 1))  # Pareto, xmin = 1
    body = rng.uniform(0.05, 1.0, 500)
    x = np.concatenate([tail, body])
    fit = fit_power_law(x)
    assert abs(fit.alpha - alpha) < 0.15  # about 2-3 standard errors
    assert fit.xmin >= 0.9
    assert fit.ks < 0.05
    ref_alpha, ref_xmin = _naive_power_law(x[:600], 5)
    small = fit_power_law(x[:600])
    assert small.alpha == pytest.approx(ref_alpha, rel=1e-9)
    assert small.xmin == pytest.approx(ref_xmin, rel=1e-12)


def test_power_law_bootstrap_is_seeded_and_plausible_on_true_data():
    # under a true power law the p-value is uniform on [0, 1]; this fixed draw is not unlucky
    rng = np.random.default_rng(0)
    x = (1 - rng.random(300)) ** (-1 / 1.5)
    a = fit_power_law(x, n_bootstrap=30, seed=1)
    b = fit_power_law(x, n_bootstrap=30, seed=1)
    assert a.p_value == b.p_value and a.p_value > 0.1
    assert fit_power_law(np.ones(3)) is None  # too few / degenerate


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(64, 20)


def test_random_init_copy_is_seeded_and_leaves_model_and_rng_alone():
    torch.manual_seed(0)
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    a, b = random_init_copy(model, seed=3), random_init_copy(model, seed=3)
    c = random_init_copy(model, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(a.conv.weight, b.conv.weight)
    assert not torch.equal(a.conv.weight, c.conv.weight)
    assert not torch.equal(a.conv.weight, model.conv.weight)


def test_analyze_weights_figures_and_json_round_trip():
    torch.manual_seed(0)
    model = _Tiny()
    trained, rand = analyze_weights(model, seed=1)  # seed 0 would redo the same init
    assert [lay.layer for lay in trained.layers] == ["conv", "fc"]
    conv = trained.layer("conv")
    w = model.conv.weight.detach().double().reshape(32, -1).numpy()  # 32 x 72
    s = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(np.sort(conv.eigenvalues)[::-1], s**2 / 72, rtol=1e-9)
    assert conv.spectral_norm == pytest.approx(s[0], rel=1e-9)
    assert conv.stable_rank == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-9)
    assert conv.alpha_weighted == pytest.approx(conv.alpha * np.log10(s[0] ** 2))
    expected = np.mean([lay.alpha_weighted for lay in trained.layers])
    assert trained.alpha_hat == pytest.approx(expected)
    assert rand is not None and rand.weights_hash != trained.weights_hash
    back = ModelSpectrum.from_dict(json.loads(json.dumps(trained.to_dict())))
    assert back.to_dict() == trained.to_dict()
