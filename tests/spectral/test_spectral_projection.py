"""Projection identity, influential vectors, dataset runs with hooks (and their removal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.capture import ActivationRecorder, hook_count
from deepprofile.data import ArrayDataset
from deepprofile.errors import EmptyDatasetError
from deepprofile.spectral.conv_svd import layer_svd
from deepprofile.spectral.projection import (
    energy_shares,
    influential_mask,
    project_captured,
    project_dataset,
    project_inputs,
    project_output,
    summarize_shares,
)

IDENTITY_TOL = 1e-10  # float64: U^T (out - b) and S V^T patches agree to rounding


@pytest.mark.parametrize("layer", [
    lambda: nn.Conv2d(5, 7, 3, padding=1),
    lambda: nn.Conv2d(5, 7, 3, stride=2, padding=1, dilation=2),
    lambda: nn.Conv2d(6, 4, 3, padding=1, groups=2, padding_mode="reflect"),
    lambda: nn.Conv2d(5, 3, (3, 5), padding="same", padding_mode="circular"),
    lambda: nn.Conv1d(5, 7, 5, padding=2),
    lambda: nn.Linear(9, 4),
])
def test_projection_identity(layer):
    torch.manual_seed(0)
    module = layer().double()
    cin = module.in_features if isinstance(module, nn.Linear) else module.in_channels
    shape = {nn.Linear: (6, cin), nn.Conv1d: (6, cin, 17)}.get(type(module), (6, cin, 11, 11))
    x = torch.randn(*shape, dtype=torch.float64)
    svd = layer_svd(module, "m")
    with torch.no_grad():
        out = module(x)
    left = project_output(svd, out)  # U^T (out - b)
    right = project_inputs(svd, module, x)  # S V^T patches
    assert left.shape == right.shape == (6, svd.rank, out[0, 0].numel())
    torch.testing.assert_close(left, right, atol=IDENTITY_TOL, rtol=0)
    # U spans the output space: the shares of all vectors sum to 1
    bias = 0 if module.bias is None else module.bias.detach().view(1, -1, *[1] * (out.ndim - 2))
    total = (out - bias).pow(2).reshape(6, -1).sum(1)
    np.testing.assert_allclose(energy_shares(left, total).sum(1).numpy(), 1.0, atol=1e-10)


def test_influential_rules():
    shares = np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.1, 0.05, 0.8], [0.25, 0.25, 0.25, 0.25]])
    cum = influential_mask(shares, 0.8, "cumulative")
    assert cum.tolist() == [[True, True, False, False], [False, False, False, True],
                            [True, True, True, True]]
    assert influential_mask(shares, 0.2, "share").tolist() == [
        [True, True, False, False], [False, False, False, True], [True, True, True, True]]
    with pytest.raises(ValueError, match="mode"):
        influential_mask(shares, 0.5, "top")
    with pytest.raises(ValueError, match="threshold"):
        influential_mask(shares, 1.5)


def test_class_aggregation_by_hand():
    svd = layer_svd(nn.Linear(3, 3).double(), "fc")
    shares = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.0, 0.2, 0.8], [0.0, 0.4, 0.6]])
    labels = np.array([0, 0, 1, 1])
    proj = summarize_shares(svd, shares, labels, threshold=0.75, class_names=["cat", "dog"])
    np.testing.assert_allclose(proj.class_mean_share, [[0.8, 0.2, 0.0], [0.0, 0.3, 0.7]])
    assert proj.class_influential == {"cat": [0], "dog": [1, 2]}
    # images: [0], [0, 1], [2], [1, 2] -> frequencies per class
    np.testing.assert_allclose(proj.class_frequency, [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    assert proj.image_influential == ((0,), (0, 1), (2,), (1, 2))


class _Net(nn.Module):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6, 3)
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        if self.fail:
            raise RuntimeError("boom")
        return self.fc(h.mean(dim=(2, 3)))


def _data(n: int = 20) -> ArrayDataset:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    y = torch.arange(n) % 3
    return ArrayDataset(x, y, class_names=["a", "b", "c"])


def test_project_dataset_matches_recorded_inputs():
    torch.manual_seed(0)
    net = _Net().train()
    data = _data()
    shapes: dict = {}
    res = project_dataset(net, data, ["conv2"], batch_size=7, quiet=True, input_shapes=shapes)
    assert net.training and hook_count(net) == 0  # mode restored, hooks gone
    assert shapes["conv2"] == (4, 8, 8)
    proj = res["conv2"]
    assert proj.n_images == 20 and proj.class_names == ("a", "b", "c")
    assert proj.class_counts == (7, 7, 6)
    # independent route: the foundation's recorder captures the full inputs (flatten), then
    # S V^T patches (the other side of the identity) gives the same shares
    with ActivationRecorder(net, ["conv2"], "flatten", capture_inputs=True) as rec:
        cap = rec(data.images)
    labels = [int(data[i][1]) for i in range(len(data))]
    svd = layer_svd(net.conv2, "conv2")
    ref = project_captured(svd, net.conv2, cap.inputs["conv2"], labels, batch_size=6,
                           class_names=["a", "b", "c"])
    np.testing.assert_allclose(proj.class_mean_share, ref.class_mean_share, atol=1e-5)
    assert proj.class_influential == ref.class_influential
    via_inputs = project_dataset(net, data, "conv2", source="inputs", quiet=True)["conv2"]
    np.testing.assert_allclose(via_inputs.mean_share, proj.mean_share, atol=1e-5)


def test_hooks_removed_when_forward_raises():
    net = _Net(fail=True).eval()
    with pytest.raises(RuntimeError, match="boom"):
        project_dataset(net, _data(), ["conv1", "conv2"], quiet=True)
    assert hook_count(net) == 0
    assert not net.training


def test_empty_dataset_is_a_clear_error():
    net = _Net()
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8),
                                           torch.zeros(0, dtype=torch.long))
    with pytest.raises(EmptyDatasetError):
        project_dataset(net, empty, "conv1", quiet=True)
    assert hook_count(net) == 0


@pytest.mark.parametrize("source", ["output", "inputs"])
def test_projection_identical_under_a_tiny_memory_budget(source):
    from deepprofile.attribution.memory import memory_budget

    torch.manual_seed(0)
    net = _Net().eval()
    data = _data()
    with memory_budget(None):
        free = project_dataset(net, data, ["conv1", "conv2"], source=source, quiet=True)
    with memory_budget(1):  # one image per forward, one row per projection chunk
        tiny = project_dataset(net, data, ["conv1", "conv2"], source=source, quiet=True)
    for name in free:
        np.testing.assert_allclose(tiny[name].class_mean_share, free[name].class_mean_share,
                                   rtol=1e-6, atol=1e-9)
        assert tiny[name].image_influential == free[name].image_influential
    assert hook_count(net) == 0
