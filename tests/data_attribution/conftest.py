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


class TinyDigitsNet(nn.Module):
    """conv(1->4, 4x4, stride 4) -> relu -> mean pool -> linear(4 -> classes), for 32x32 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(1, 4, 4, stride=4)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


register_model("tiny_digits_da", TinyDigitsNet)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A trained tiny digits model (2 checkpoints), a run with its capture, a concept probe."""
    from deepprofile.concepts.probes import ConceptProbe, fit_probe, save_probes
    from deepprofile.concepts.sets import class_group_concept
    from deepprofile.data import load_dataset
    from deepprofile.models import load_model
    from deepprofile.models.train import TrainConfig, train
    from deepprofile.workflow import capture_run

    out = tmp_path_factory.mktemp("digits_trak")
    config = TrainConfig(arch="tiny_digits_da", arch_kwargs={}, epochs=2, n_checkpoints=2,
                         lr=0.1, batch_size=128)
    result = train(config, out / "model", quiet=True)
    model, info = load_model(result.final_checkpoint)
    test = load_dataset("digits", split="test")
    run, store = capture_run(model, test, out / "run", ["act"], model_info=info.to_dict(),
                             checkpoint=result.final_checkpoint, quiet=True)
    cset = class_group_concept("odd", [1, 3, 5, 7, 9], store.labels)
    cset.save(run.path)
    fit = fit_probe(store.layer("act"), cset.mask("odd"))
    save_probes(run.path, [ConceptProbe.from_fit(fit, layer="act", concept="odd",
                                                 reduction="mean",
                                                 store_name="activations.zarr")])
    return {"run": run.path, "model_dir": out / "model", "result": result}
