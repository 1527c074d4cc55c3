"""ActivationRecorder: recording, hook removal on errors, mode restore, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.capture import ActivationRecorder, hook_count
from deepprofile.errors import NonFiniteActivationError, UnknownLayerError


class Boom(RuntimeError):
    pass


def test_records_outputs_inputs_logits(tiny_net, tiny_images):
    with ActivationRecorder(tiny_net, ["conv1", "conv2"], "flatten", capture_inputs=True) as rec:
        cap = rec(tiny_images)
    with torch.no_grad():
        h1 = tiny_net.conv1(tiny_images)
        h2 = tiny_net.conv2(tiny_net.act(h1))
        logits = tiny_net(tiny_images)
    torch.testing.assert_close(cap.activations["conv1"], h1)
    torch.testing.assert_close(cap.activations["conv2"], h2)
    torch.testing.assert_close(cap.inputs["conv2"], tiny_net.act(h1))
    torch.testing.assert_close(cap.logits, logits)
    assert torch.equal(cap.predictions, logits.argmax(1))
    assert rec.output_shapes == {"conv1": (2, 8, 8), "conv2": (3, 4, 4)}
    assert hook_count(tiny_net) == 0


def test_no_hook_left_and_mode_restored_when_forward_raises(tiny_net, tiny_images):
    tiny_net.train()

    def explode(module, args, output):
        raise Boom("mid-forward failure")

    handle = tiny_net.conv2.register_forward_hook(explode)
    try:
        with pytest.raises(Boom):
            with ActivationRecorder(tiny_net, ["conv1", "fc"], "mean") as rec:
                assert not tiny_net.training  # eval inside the block
                rec(tiny_images)
    finally:
        handle.remove()
    assert hook_count(tiny_net) == 0
    assert tiny_net.training


def test_no_hook_left_when_module_raises_inside_model(tiny_images):
    class Raising(nn.Module):
        def forward(self, x):
            raise Boom("bad module")

    net = nn.Sequential(nn.Conv2d(1, 2, 3), Raising(), nn.Flatten())
    with pytest.raises(Boom):
        with ActivationRecorder(net, ["0", "2"], "mean") as rec:
            rec(tiny_images)
    assert hook_count(net) == 0


def test_tuple_outputs_use_first_tensor(tiny_images):
    class Pair(nn.Module):
        def forward(self, x):
            return (x * 2, "meta")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

        def forward(self, x):
            return self.head(self.pair(x)[0])

    net = Net()
    with ActivationRecorder(net, ["pair"], "mean") as rec:
        cap = rec(tiny_images)
    torch.testing.assert_close(cap.activations["pair"], (tiny_images * 2).mean(dim=(2, 3)))


def test_nan_activation_names_layer_and_sample(tiny_net, tiny_images):
    images = tiny_images.clone()
    images[3, 0, 2, 2] = float("nan")
    with pytest.raises(NonFiniteActivationError, match=r"'conv1'.*\[13\]"):
        with ActivationRecorder(tiny_net, ["conv1"], "mean") as rec:
            rec(images, sample_indices=np.arange(10, 20))
    assert hook_count(tiny_net) == 0


def test_unknown_layer_lists_close_matches(tiny_net):
    with pytest.raises(UnknownLayerError, match="Did you mean: conv1"):
        ActivationRecorder(tiny_net, ["conv_1"], "mean")
    with pytest.raises(UnknownLayerError, match="matches no module"):
        ActivationRecorder(tiny_net, ["block*"], "mean")


def test_glob_selection(tiny_net):
    rec = ActivationRecorder(tiny_net, ["conv*"], "mean")
    assert rec.layers == ["conv1", "conv2"]


def test_recorder_outside_with_block_is_an_error(tiny_net, tiny_images):
    rec = ActivationRecorder(tiny_net, ["conv1"], "mean")
    with pytest.raises(RuntimeError, match="inside"):
        rec(tiny_images)


def test_finite_values_whose_sum_overflows_are_not_an_error():
    """The per-batch check sums each layer; a sum that overflows to inf from finite values
    is looked at row by row and passes."""
    class Huge(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 4), 3e38)

    model = torch.nn.Sequential(Huge(), torch.nn.Identity())
    with ActivationRecorder(model, ["0"], "mean") as rec:
        cap = rec(torch.zeros(5, 1))
    assert torch.isinf(cap.activations["0"].sum())  # the fast check did overflow
    assert torch.equal(cap.activations["0"], torch.full((5, 4), 3e38))


def test_nan_in_the_second_layer_is_reported_for_that_layer(tiny_net, tiny_images):
    images = tiny_images.clone()
    with ActivationRecorder(tiny_net, ["conv1", "fc"], "mean") as rec:
        tiny_net.fc.bias.data[1] = float("inf")
        try:
            with pytest.raises(NonFiniteActivationError, match=r"'fc'.*\[0, 1, 2"):
                rec(images)
        finally:
            tiny_net.fc.bias.data[1] = 0.0
    assert hook_count(tiny_net) == 0


def test_tuple_output_warns_which_tensor_is_taken_as_logits(tiny_net, tiny_images):
    class FeaturesThenLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net

        def forward(self, x: torch.Tensor):
            return torch.flatten(x, 1), self.net(x)

    model = FeaturesThenLogits()
    with ActivationRecorder(model, ["net.conv1"], "mean") as rec:
        with pytest.warns(UserWarning, match=r"tuple.*shape \(10, 64\).*wrap the model"):
            rec(tiny_images)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rec(tiny_images)  # once per recorder
    with ActivationRecorder(tiny_net, ["conv1"], "mean") as rec, warnings.catch_warnings():
        warnings.simplefilter("error")
        rec(tiny_images)  # a plain tensor output: no warning
