"""Probes: the folded scaler against scikit-learn, planted concepts, controls, sparsity,
the probe as a differentiable module (and its hook discipline), persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.capture.hooks import hook_count
from deepprofile.concepts.analysis import probe_layers, sparsity
from deepprofile.concepts.capture import capture_arrays
from deepprofile.concepts.probes import (
    ConceptProbe,
    fit_probe,
    load_probes,
    reduce_differentiable,
    save_probes,
)
from deepprofile.errors import ConceptDataError

LAYERS = ["conv1", "act2"]


def test_folded_probe_matches_sklearn_pipeline():
    """Raw-space weights reproduce StandardScaler + LogisticRegression's decision function."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 6)) * [1, 10, 0.1, 3, 1, 1] + 5
    y = X[:, 0] + 0.2 * X[:, 1] > 6
    fit = fit_probe(X, y, C=0.5)
    ref = make_pipeline(StandardScaler(), LogisticRegression(
        C=0.5, class_weight="balanced", max_iter=2000)).fit(X, y)
    np.testing.assert_allclose(X @ fit.weight + fit.bias, ref.decision_function(X),
                               rtol=1e-4, atol=1e-4)
    assert fit.balanced_accuracy > 0.9 and len(fit.fold_scores) == 5


def test_sparsity_finds_the_planted_unit():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 12))
    y = X[:, 7] > 0.1
    l1 = fit_probe(X, y, penalty="l1")
    k, units, acc = sparsity(X, y, l1)
    assert k == 1 and units == (7,) and acc >= 0.9 * l1.balanced_accuracy


def test_marker_decodable_in_spurious_model_and_shuffled_at_chance(spurious_net, eval_arrays):
    acts = capture_arrays(spurious_net, torch.from_numpy(eval_arrays["images"]), LAYERS,
                          {"conv1": "max", "act2": "mean"})
    profile, _ = probe_layers(acts, eval_arrays["marker"], concept="marker", n_shuffles=3)
    assert profile.known
    best = max(profile.layers, key=lambda lp: lp.accuracy)
    assert best.accuracy > 0.9
    for lp in profile.layers:
        assert abs(lp.shuffled_accuracy - 0.5) < 0.08, lp  # chance, with 240 samples
    assert profile.first_layer in LAYERS


def test_random_label_concept_never_known(spurious_net, eval_arrays):
    """A concept the model cannot see (coin flips) is never reported as known."""
    acts = capture_arrays(spurious_net, torch.from_numpy(eval_arrays["images"]), LAYERS,
                          {"conv1": "max", "act2": "mean"})
    for seed in range(3):
        y = np.random.default_rng(100 + seed).random(len(eval_arrays["marker"])) < 0.5
        profile, _ = probe_layers(acts, y, concept="coin", n_shuffles=3, seed=seed)
        assert not profile.known, profile.to_dict()
        assert profile.first_layer is None


@pytest.mark.parametrize("reduction", ["mean", "max", "max_position", "flatten", "positions:3"])
def test_probe_module_matches_logit_on_stored_activations(reduction, spurious_net,
                                                          eval_arrays):
    images = torch.from_numpy(eval_arrays["images"][:16])
    acts = capture_arrays(spurious_net, images, ["act1"], {"act1": reduction})["act1"]
    rng = np.random.default_rng(0)
    n_feat = int(np.prod(acts.shape[1:])) if reduction != "positions:3" else acts.shape[-1]
    probe = ConceptProbe("act1", "c", reduction, "activations.zarr",
                         rng.normal(size=n_feat), 0.3, 0.9)
    module = probe.as_module(spurious_net)
    out = module(images)
    assert out.shape == (16,)
    if reduction != "positions:3":  # sampled positions vs every position: not identical
        np.testing.assert_allclose(out.detach().numpy(), probe.logit(acts), rtol=1e-4,
                                   atol=1e-4)
    assert hook_count(spurious_net) == 0


def test_probe_module_gradients_reach_input_and_early_parameters(spurious_net):
    spurious_net.zero_grad(set_to_none=True)
    probe = ConceptProbe("act1", "c", "mean", "s", np.ones(8), 0.0, 1.0)
    module = probe.as_module(spurious_net)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert spurious_net.conv1.weight.grad is not None
    assert spurious_net.fc.weight.grad is None  # after the layer: never reached
    spurious_net.zero_grad(set_to_none=True)
    assert {n for n, _ in module.named_parameters()} >= {"model.conv1.weight"}


def test_probe_module_removes_its_hook_when_the_forward_raises():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3)
            self.b = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            x = self.a(x)
            raise RuntimeError("boom")

    net = Boom()
    module = ConceptProbe("b", "c", "mean", "s", np.ones(2), 0.0, 1.0).as_module(net)
    with pytest.raises(RuntimeError, match="boom"):
        module(torch.rand(1, 3, 8, 8))
    assert hook_count(net) == 0


def test_reduce_differentiable_max_position_picks_the_largest_norm():
    out = torch.zeros(1, 2, 2, 2)
    out[0, :, 1, 0] = torch.tensor([3.0, 4.0])
    out[0, :, 0, 1] = torch.tensor([1.0, 1.0])
    np.testing.assert_allclose(reduce_differentiable(out, "max_position").numpy(), [[3.0, 4.0]])


def test_save_and_load_probes(tmp_path):
    probes = [ConceptProbe("l1", "a", "mean", "s", np.arange(3.0), -1.5, 0.8, 0.01),
              ConceptProbe("l2", "b:x", "flatten", "s", np.ones(5), 2.0, 0.6)]
    save_probes(tmp_path, probes)
    back = load_probes(tmp_path)
    assert [(p.layer, p.concept, p.bias) for p in back] == [("l1", "a", -1.5), ("l2", "b:x", 2.0)]
    np.testing.assert_array_equal(back[0].weight, probes[0].weight)
    assert back[0].balanced_accuracy_std == 0.01


@pytest.mark.parametrize("y, match", [
    (np.zeros(20, bool), "only one class"),
    (np.r_[np.ones(1, bool), np.zeros(19, bool)], "at least 2 positives"),
])
def test_one_class_concept_is_a_clear_error(y, match):
    with pytest.raises(ConceptDataError, match=match) as info:
        fit_probe(np.random.default_rng(0).normal(size=(20, 3)), y)
    assert "\n" not in str(info.value)
