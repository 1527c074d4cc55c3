"""Baselines for TRAK on the same checkpoints: captum's TracInCP, and random scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepprofile.data_attribution.trak import load_state


def tracin_scores(model: nn.Module, checkpoints: Sequence[str | Path], train_set: Dataset,
                  targets: Dataset, *, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """captum ``TracInCP`` (sum over checkpoints of train-loss . test-loss gradient dot
    products, learning rate 1) as ``(n_train, n_targets)``: positive = proponent."""
    from captum.influence import TracInCP

    def load(m: nn.Module, path: str) -> float:
        m.load_state_dict(load_state(path))
        m.eval()
        return 1.0

    model = model.to(device).eval()
    tracin = TracInCP(model, train_set, [str(p) for p in checkpoints], load,
                      loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=batch_size)
    xs, ys = zip(*[(x, torch.as_tensor(y)) for x, y in
                   DataLoader(targets, batch_size=len(targets))], strict=True)  # type: ignore[arg-type]
    influence = tracin.influence((xs[0].to(device), ys[0].long().to(device)))
    return influence.detach().cpu().numpy().T.astype(np.float64)


def random_scores(n_train: int, n_targets: int, seed: int = 0) -> np.ndarray:
    """Standard-normal scores: the LDS floor (about 0)."""
    return np.random.default_rng(seed).standard_normal((n_train, n_targets))
