"""Fixtures for the attribution tests: tiny seeded models with known structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from deepprofile.models.small import SmallResNet


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""


class TanhCNN(nn.Module):
    """A smooth CNN (tanh), so integrated gradients converge quickly with the steps."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.Tanh()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.act2 = nn.Tanh()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def spread_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and statistics, so a random-init
    network's outputs depend clearly on its input (fresh BN makes it near-constant)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1.0 + 0.5 * torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.3 + 0.5 * torch.rand(c, generator=gen))
    return model


@pytest.fixture
def tanh_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TanhCNN().eval()


@pytest.fixture
def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return spread_batchnorm(SmallResNet(num_classes=4, widths=(4, 6, 8))).eval()


@pytest.fixture
def images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(5, 1, 16, 16, generator=gen)


def quadrant_data(n: int, seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 1 x size x size images with a bright patch in one quadrant; label = quadrant."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = 0.5 * torch.randn(n, 1, size, size, generator=gen)
    h = size // 2
    for i, q in enumerate(y.tolist()):
        r, c = divmod(q, 2)
        x[i, 0, r * h : (r + 1) * h, c * h : (c + 1) * h] += 1.0
    return x, y


@pytest.fixture(scope="session")
def trained_resnet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny SmallResNet trained briefly on the quadrant task, with held-out images."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = SmallResNet(num_classes=4, widths=(4, 6, 8))
    x, y = quadrant_data(256, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(threads)
    x_test, y_test = quadrant_data(64, seed=1)
    return model, x_test, y_test


def make_run(root: Path, n: int = 30) -> tuple[Path, nn.Module, object]:
    """A run folder under ``root``: a tiny SmallResNet checkpoint, ``n`` captured digits."""
    from deepprofile.data import DigitsDataset
    from deepprofile.models import save_checkpoint
    from deepprofile.workflow import capture_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "widths": (4, 6, 8)}
    model = spread_batchnorm(SmallResNet(num_classes=10, **kwargs)).eval()
    root.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(root / "model.pt", model, "small_resnet", kwargs)
    dataset = DigitsDataset("test")
    capture_run(model, dataset, root / "run", ["layer1", "layer2"], checkpoint=str(ckpt),
                indices=range(n), quiet=True)
    torch.set_num_threads(threads)
    return root / "run", model, dataset
