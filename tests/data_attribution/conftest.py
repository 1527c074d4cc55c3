"""Tiny models and data for TRAK tests: an MLP on Gaussian blobs with two checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.data import ArrayDataset
from deepprofile.models.registry import register_model, save_checkpoint


class TinyMLP(nn.Module):
    """Flatten -> linear(8 -> 6) -> tanh -> linear(6 -> 3); inputs (1, 2, 4)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.Tanh())
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(x))


register_model("tiny_mlp_da", TinyMLP)


def blobs(n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = np.random.default_rng(99).normal(size=(3, 8)) * 1.5
    x = centres[labels] + rng.normal(size=(n, 8))
    return ArrayDataset(x.reshape(n, 1, 2, 4).astype(np.float32), labels, name="blobs")


def train_tiny(train: ArrayDataset, out: Path, seed: int = 0, epochs: int = 30,
               keep: tuple[int, ...] = (15, 30), indices: np.ndarray | None = None
               ) -> list[Path]:
    """Full-batch Adam on ``train`` (or its ``indices``); checkpoints at ``keep`` epochs."""
    torch.manual_seed(seed)
    model = TinyMLP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    idx = np.arange(len(train)) if indices is None else indices
    x, y = train.images[idx], train.targets[idx]
    paths = []
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if epoch in keep:
            paths.append(save_checkpoint(out / f"epoch_{epoch:03d}.pt", model, "tiny_mlp_da",
                                         {}, num_classes=3, epoch=epoch, seed=seed))
    return paths


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_trak")
    train, test = blobs(120, 0), blobs(12, 1)
    paths = train_tiny(train, out / "checkpoints")
    return {"train": train, "test": test, "checkpoints": paths, "dir": out,
            "model": TinyMLP().eval()}
