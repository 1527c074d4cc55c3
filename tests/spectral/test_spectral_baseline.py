"""The random-init baseline is a fresh instance built by the architecture's own constructor.

References: ``build_model`` called after ``torch.manual_seed`` (the same constructor, outside
the function under test), numpy SVDs of the weights, and independent inits of the same
architecture. The old baseline (every module's ``reset_parameters()``) fails these checks for
torchvision models: their constructors use Kaiming-normal fan-out, a different scale.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.models import build_model
from deepprofile.models.small import SmallResNet
from deepprofile.spectral.baseline import random_init_baseline
from deepprofile.spectral.pipeline import run_spectral, summarize_spectral
from deepprofile.spectral.rmt import WeightSpectrumAnalyzer


def _built(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_classes=10)


@pytest.mark.parametrize("arch", ["small_resnet", "resnet18", "mobilenet_v2",
                                  "efficientnet_b0", "densenet121"])
def test_baseline_equals_the_constructor_under_its_seed(arch):
    model = _built(arch, 5)
    state = torch.random.get_rng_state()
    baseline, how = random_init_baseline(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert how.method == "constructor" and not how.is_fallback and how.arch == arch
    reference = _built(arch, 3).state_dict()
    got = baseline.state_dict()
    assert list(got) == list(reference)
    for key, value in reference.items():
        assert torch.equal(got[key], value), key


def test_untrained_resnet18_and_its_baseline_have_the_same_spectra():
    """Two independent inits of resnet18: per-layer spectral norms within a few percent, and
    alpha-hat close (measured: 3.97 vs 5.22 for seeds 11/0; the generic init gave -2.5)."""
    model = _built("resnet18", 11)
    ana = WeightSpectrumAnalyzer(seed=0).fit(model)
    ratios = np.array([a.spectral_norm / b.spectral_norm
                       for a, b in zip(ana.result_.layers, ana.random_init_.layers, strict=True)])
    assert 0.9 < ratios.min() and ratios.max() < 1.1  # generic init: 0.54 .. 2.52
    assert np.median(np.abs(np.log(ratios))) < 0.02
    trained, baseline = ana.result_.alpha_hat, ana.random_init_.alpha_hat
    assert baseline > 0 and abs(trained - baseline) < 0.4 * abs(trained)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0", "densenet121", "resnet50"])
def test_untrained_model_and_its_baseline_agree(arch):
    ana = WeightSpectrumAnalyzer(seed=0).fit(_built(arch, 11))
    ratios = np.array([a.spectral_norm / b.spectral_norm
                       for a, b in zip(ana.result_.layers, ana.random_init_.layers, strict=True)])
    assert 0.75 < ratios.min() and ratios.max() < 1.33  # generic init: 0.08 .. 12.3
    assert np.median(np.abs(np.log(ratios))) < 0.03
    mean_log = [np.mean([np.log10(lay.spectral_norm ** 2) for lay in s.layers])
                for s in (ana.result_, ana.random_init_)]
    assert mean_log[0] == pytest.approx(mean_log[1], abs=0.02)


def test_model_info_names_the_architecture_of_a_plain_instance():
    torch.manual_seed(1)
    model = SmallResNet(num_classes=3, widths=(4, 8, 16))
    info = {"arch": "small_resnet", "num_classes": 3, "arch_kwargs": {"widths": (4, 8, 16)}}
    baseline, how = random_init_baseline(model, seed=2, model_info=info)
    assert how.method == "constructor" and how.arch_kwargs == {"widths": (4, 8, 16)}
    torch.manual_seed(2)
    reference = SmallResNet(num_classes=3, widths=(4, 8, 16))
    assert torch.equal(baseline.stem[0].weight, reference.stem[0].weight)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, 12)


def test_unknown_architecture_falls_back_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = _Custom()
    _, how = random_init_baseline(model, seed=1)
    assert how.method == "reset_parameters" and how.is_fallback and "unknown" in how.reason
    # a model_info whose constructor does not fit the weights is a fallback too
    _, how = random_init_baseline(SmallResNet(num_classes=3), seed=1,
                                  model_info={"arch": "small_resnet", "num_classes": 7})
    assert how.is_fallback and "differ" in how.reason
    result = run_spectral(model, tmp_path, None, quiet=True)
    saved = json.loads((tmp_path / "results" / "spectral.json").read_text())
    assert saved["parameters"]["random_init_baseline"]["fallback"] is True
    assert saved["random_init"]["parameters"]["baseline"]["method"] == "reset_parameters"
    assert "reset_parameters()" in summarize_spectral(result)


def test_alpha_hat_is_recomputable_from_the_json(tmp_path):
    """Both largest eigenvalues are stored, named; alpha-hat = mean alpha * log10 of the
    unnormalised one, which is the squared largest singular value (numpy SVD)."""
    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=10)
    run_spectral(model, tmp_path, None, quiet=True)
    data = json.loads((tmp_path / "results" / "spectral.json").read_text())
    modules = dict(model.named_modules())
    for part in ("trained", "random_init"):
        spectrum = data[part]
        values = []
        for lay in spectrum["layers"]:
            w = modules[lay["layer"]].weight.detach().double() if part == "trained" else None
            if w is not None:
                s_max = np.linalg.svd(w.reshape(w.shape[0], -1).numpy(), compute_uv=False)[0]
                assert lay["lambda_max_unnormalised"] == pytest.approx(s_max ** 2, rel=1e-10)
            assert lay["lambda_max_normalised"] == pytest.approx(
                lay["lambda_max_unnormalised"] / lay["n"], rel=1e-10)
            assert f"n = {lay['n']}" in lay["lambda_max_normalisation"]
            if lay["power_law"] is not None:
                values.append(lay["power_law"]["alpha"] * np.log10(lay["lambda_max_unnormalised"]))
        assert spectrum["alpha_hat"] == pytest.approx(float(np.mean(values)), rel=1e-12)
        assert data["alpha_hat"][part] == pytest.approx(float(np.mean(values)), rel=1e-12)
