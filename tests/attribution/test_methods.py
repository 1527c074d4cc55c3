"""attribute(): captum's numbers exactly, IG completeness, targets, modes and hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum import attr

from deepprofile.attribution.methods import (
    AttributionMaps,
    UnknownMethodError,
    attribute,
    canonical_method,
    saliency_maps,
)
from deepprofile.capture import hook_count
from deepprofile.errors import DeepProfileError, UnknownLayerError


@pytest.mark.parametrize("n_steps,tol", [(64, 1e-3), (256, 1e-4)])
def test_ig_completeness_smooth_model(tanh_cnn, images, n_steps, tol):
    """sum(IG) = f_t(x) - f_t(0) up to the quadrature error (relative tolerance ``tol``)."""
    x = 3 * images
    res = attribute(tanh_cnn, x, method="ig", target=1, n_steps=n_steps)
    with torch.no_grad():
        expected = (tanh_cnn(x)[:, 1] - tanh_cnn(torch.zeros_like(x))[:, 1]).numpy()
    total = res.attributions.reshape(len(x), -1).sum(axis=1)
    assert np.abs(expected).min() > 1e-3  # the check is not vacuous
    np.testing.assert_allclose(total, expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_ig_completeness_relu_resnet_with_baseline(trained_resnet):
    """On a ReLU ResNet (piecewise linear) completeness holds within 1% at 256 steps."""
    model, x, _ = trained_resnet
    x = x[:6]
    baseline = torch.full_like(x, -0.5)
    res = attribute(model, x, method="ig", baselines=baseline, n_steps=256,
                    return_convergence_delta=True)
    with torch.no_grad():
        f = model(x).gather(1, torch.as_tensor(res.targets)[:, None]).squeeze(1)
        f0 = model(baseline).gather(1, torch.as_tensor(res.targets)[:, None]).squeeze(1)
    expected = (f - f0).numpy()
    total = res.attributions.reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=0.01, atol=0.01 * np.abs(expected).max())
    # captum's own convergence delta agrees with the independent computation
    np.testing.assert_allclose(res.convergence_delta, total - expected, atol=1e-4)
    np.testing.assert_array_equal(res.baselines, baseline.numpy())


def _captum(model, x, t, name):
    layer = model.layer2
    if name == "saliency":
        return attr.Saliency(model).attribute(x, target=t, abs=False)
    if name == "input_x_gradient":
        return attr.InputXGradient(model).attribute(x, target=t)
    if name == "integrated_gradients":
        return attr.IntegratedGradients(model).attribute(x, target=t, n_steps=20)
    if name == "smoothgrad":
        torch.manual_seed(7)
        return attr.NoiseTunnel(attr.Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=5, stdevs=0.2, target=t, abs=False)
    if name == "gradient_shap":
        torch.manual_seed(7)
        np.random.seed(7)  # captum draws GradientShap's path points with numpy
        return attr.GradientShap(model).attribute(
            x, baselines=torch.zeros(1, *x.shape[1:]), n_samples=6, stdevs=0.0, target=t)
    if name == "layer_integrated_gradients":
        return attr.LayerIntegratedGradients(model, layer).attribute(x, target=t, n_steps=20)
    if name == "layer_gradcam":
        return attr.LayerGradCam(model, layer).attribute(x, target=t)
    raise AssertionError(name)


KW = {
    "integrated_gradients": {"n_steps": 20},
    "smoothgrad": {"nt_samples": 5, "stdevs": 0.2, "seed": 7},
    "gradient_shap": {"n_samples": 6, "seed": 7},
    "layer_integrated_gradients": {"n_steps": 20, "layer": "layer2"},
    "layer_gradcam": {"layer": "layer2"},
}


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("name", [
    "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap",
    "layer_integrated_gradients", "layer_gradcam",
])
def test_wrappers_give_captums_numbers_exactly(small_resnet, images, name):
    t = torch.tensor([0, 1, 2, 3, 1])
    expected = _captum(small_resnet, images.clone(), t, name).detach().numpy()
    res = attribute(small_resnet, images, method=name, target=t, batch_size=64, **KW.get(name, {}))
    np.testing.assert_array_equal(res.attributions, expected)
    assert res.method == name
    assert res.target_mode == "given"
    np.testing.assert_array_equal(res.targets, t.numpy())
    assert res.layer == ("layer2" if name.startswith("layer") else None)


def test_batching_matches_one_batch(small_resnet, images):
    whole = attribute(small_resnet, images, method="ig", n_steps=10, batch_size=64)
    split = attribute(small_resnet, images, method="ig", n_steps=10, batch_size=2)
    np.testing.assert_allclose(split.attributions, whole.attributions, rtol=1e-5, atol=1e-7)


def test_stochastic_methods_are_seeded_and_leave_global_rng(small_resnet, images):
    torch.manual_seed(123)
    np.random.seed(5)
    before = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(5)
    a = attribute(small_resnet, images, method="smoothgrad", nt_samples=4, seed=3)
    attribute(small_resnet, images, method="gradient_shap", n_samples=4, seed=3)
    after = torch.rand(1), np.random.rand()
    b = attribute(small_resnet, images, method="smoothgrad", nt_samples=4, seed=3)
    c = attribute(small_resnet, images, method="smoothgrad", nt_samples=4, seed=4)
    assert torch.equal(before[0], after[0]) and before[1] == after[1]  # global RNGs untouched
    np.testing.assert_array_equal(a.attributions, b.attributions)
    assert not np.array_equal(a.attributions, c.attributions)


def test_targets_label_prediction_and_class(small_resnet, images):
    labels = np.array([3, 2, 1, 0, 3])
    by_label = attribute(small_resnet, images, method="saliency", target="label", labels=labels)
    np.testing.assert_array_equal(by_label.targets, labels)
    assert by_label.target_mode == "label"
    pred = attribute(small_resnet, images, method="saliency", target="prediction")
    with torch.no_grad():
        np.testing.assert_array_equal(pred.targets, small_resnet(images).argmax(1).numpy())
    cls = attribute(small_resnet, images, method="saliency", target=2)
    assert cls.target_mode == "class:2" and set(cls.targets) == {2}
    with pytest.raises(DeepProfileError, match="labels"):
        attribute(small_resnet, images, method="saliency", target="label")


def test_clear_errors(small_resnet, images):
    with pytest.raises(UnknownMethodError, match="Known methods"):
        attribute(small_resnet, images, method="deeplift-ish")
    with pytest.raises(UnknownMethodError, match="n_steps"):
        attribute(small_resnet, images, method="saliency", n_steps=3)
    with pytest.raises(DeepProfileError, match="layer="):
        attribute(small_resnet, images, method="gradcam")
    with pytest.raises(UnknownLayerError, match="layer2"):
        attribute(small_resnet, images, method="gradcam", layer="layr2")
    with pytest.raises(DeepProfileError, match="exactly one"):
        attribute(small_resnet, images, method="gradcam", layer="layer*")
    assert canonical_method("IG") == "integrated_gradients"
    assert canonical_method("grad-cam") == "layer_gradcam"


def test_mode_restored_and_no_hooks_after_failure(small_resnet, images):
    small_resnet.train()
    res = attribute(small_resnet, images, method="layer_ig", layer="layer1", n_steps=4)
    assert small_resnet.training and all(m.training for m in small_resnet.modules())
    assert hook_count(small_resnet) == 0
    # computed in eval mode: equals captum on the eval-mode model
    small_resnet.eval()
    expected = attr.LayerIntegratedGradients(small_resnet, small_resnet.layer1).attribute(
        images, target=torch.as_tensor(res.targets), n_steps=4)
    np.testing.assert_array_equal(res.attributions, expected.detach().numpy())
    small_resnet.train()
    with pytest.raises((IndexError, RuntimeError)):
        attribute(small_resnet, images, method="layer_gradcam", layer="layer2", target=99)
    assert hook_count(small_resnet) == 0
    assert small_resnet.training and all(m.training for m in small_resnet.modules())


def test_gradcam_upsampled_to_input(small_resnet, images):
    res = attribute(small_resnet, images, method="gradcam", layer="layer3", upsample=True)
    assert res.attributions.shape == (5, 1, 16, 16)
    assert saliency_maps(res.attributions).shape == (5, 16, 16)


def test_maps_round_trip_json(small_resnet, images):
    res = attribute(small_resnet, images, method="ig", n_steps=4, return_convergence_delta=True,
                    sample_indices=[10, 11, 12, 13, 14])
    back = AttributionMaps.from_dict(json.loads(json.dumps(res.to_dict())))
    np.testing.assert_array_equal(back.attributions, res.attributions)
    np.testing.assert_array_equal(back.convergence_delta, res.convergence_delta)
    np.testing.assert_array_equal(back.sample_indices, [10, 11, 12, 13, 14])
    assert back.params == res.params and back.baseline == "zeros"
    assert back.model == "SmallResNet"
