"""Shared fixtures: tiny models with known structure and tiny datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.data import ArrayDataset


class TinyConvNet(nn.Module):
    """conv(1->2, 3x3, pad 1) -> relu -> conv(2->3, 3x3, stride 2) -> pool -> fc(3->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny_net() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet().eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(10, 1, 8, 8, generator=gen)


@pytest.fixture
def tiny_dataset() -> ArrayDataset:
    rng = np.random.default_rng(2)
    images = rng.normal(size=(50, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=50)
    return ArrayDataset(images, labels, name="tiny")


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (tiny models: faster, no oversubscription), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
