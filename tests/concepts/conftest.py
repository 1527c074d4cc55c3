"""Fixtures for the concept tests: a tiny CNN trained in seconds on shapes with a planted
marker shortcut (spurious) and without it (clean), and their activations on a shared
evaluation set where half of every class carries the marker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.data import ShapesDataset


class TinyShapesNet(nn.Module):
    """conv(3->8, s2) -> relu -> conv(8->16, s2) -> relu -> pool -> fc(16->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _images(ds: ShapesDataset) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([ds[i][0] for i in range(len(ds))]),
            torch.tensor([ds[i][1] for i in range(len(ds))]))


def train_tiny(marker_rate: float, base_rate: float, seed: int = 0, n: int = 320,
               steps: int = 150) -> TinyShapesNet:
    """Adam on ``n`` shapes images; with ``marker_rate`` high on class 0, the marker is a
    perfect shortcut the net learns within the steps."""
    ds = ShapesDataset(n, seed=seed, spurious_class=0, marker_rate=marker_rate,
                       marker_base_rate=base_rate)
    x, y = _images(ds)
    torch.manual_seed(seed)
    net = TinyShapesNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n, (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    return net.eval()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def eval_set() -> ShapesDataset:
    return ShapesDataset(240, seed=1000, spurious_class=0, marker_rate=0.5, marker_base_rate=0.5)


@pytest.fixture(scope="session")
def spurious_net() -> TinyShapesNet:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny(marker_rate=1.0, base_rate=0.0)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def eval_arrays(eval_set: ShapesDataset) -> dict[str, np.ndarray]:
    x, y = _images(eval_set)
    table = eval_set.concept_table()
    return {"images": x.numpy(), "labels": y.numpy(), "marker": table["marker"].astype(bool),
            "colour": table["colour"]}
