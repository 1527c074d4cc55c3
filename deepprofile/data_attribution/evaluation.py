"""How good are attribution scores? The linear datamodeling score and the removal check.

- :func:`lds` (Park et al. 2023): draw ``m`` random training subsets of fraction
  ``alpha``, retrain on each, and compare per target the outputs the scores predict
  (the sum of the scores of the subset's images) with the retrained models' outputs
  by Spearman correlation; average over targets. Random scores give about 0.
- :func:`removal_check` (Konz et al. 2023): remove the ``n`` training images the
  scores rank highest for a target, retrain, and compare the drop of the target's
  metric with the drop after removing ``n`` random images, over several seeds.

Both take the retraining as a callable ``train_fn(indices, seed) -> model`` so the
same code serves a logistic regression in a test and the demo CNN in the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, Dataset

TrainFn = Callable[[np.ndarray, int], nn.Module]


def random_subsets(n_train: int, m: int, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """``(m, n_train)`` boolean masks, each with ``round(alpha * n_train)`` images."""
    rng = np.random.default_rng(seed)
    size = int(round(alpha * n_train))
    masks = np.zeros((m, n_train), dtype=bool)
    for i in range(m):
        masks[i, rng.choice(n_train, size=size, replace=False)] = True
    return masks


@torch.no_grad()
def margins(model: nn.Module, dataset: Dataset, batch_size: int = 256,
            device: str | torch.device = "cpu") -> np.ndarray:
    """TRAK's model output per example: true-class logit minus logsumexp of the others."""
    model.eval()
    out = []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        logits = model(x.to(device)).float()
        y = torch.as_tensor(y).long().to(device)
        correct = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf"))
        out.append((correct - others.logsumexp(1)).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def subset_outputs(train_fn: TrainFn, masks: np.ndarray,
                   output_fn: Callable[[nn.Module], np.ndarray], seed: int = 0) -> np.ndarray:
    """Retrain on each subset (``train_fn(indices, seed)``) and record ``output_fn(model)``:
    ``(m, n_targets)``."""
    return np.stack([np.asarray(output_fn(train_fn(np.flatnonzero(mask), seed + i)))
                     for i, mask in enumerate(masks)])


@dataclass(frozen=True)
class LDSResult:
    """Mean Spearman correlation over targets, and per target."""

    lds: float
    per_target: tuple[float, ...]
    m: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lds(scores: np.ndarray, masks: np.ndarray, outputs: np.ndarray,
        alpha: float | None = None) -> LDSResult:
    """Linear datamodeling score of ``scores`` ``(n_train, n_targets)`` against the
    ``outputs`` ``(m, n_targets)`` of models retrained on ``masks`` ``(m, n_train)``."""
    scores, outputs = np.asarray(scores, dtype=np.float64), np.asarray(outputs, np.float64)
    masks = np.asarray(masks, dtype=bool)
    if scores.ndim == 1:
        scores = scores[:, None]
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    predicted = masks.astype(np.float64) @ scores
    rhos = []
    for j in range(scores.shape[1]):
        if np.ptp(predicted[:, j]) == 0 or np.ptp(outputs[:, j]) == 0:
            rhos.append(0.0)
            continue
        rhos.append(float(spearmanr(predicted[:, j], outputs[:, j]).statistic))
    a = float(masks.mean()) if alpha is None else float(alpha)
    return LDSResult(float(np.mean(rhos)), tuple(rhos), int(len(masks)), a)


@dataclass(frozen=True)
class RemovalResult:
    """Metric of the full model, after removing the top-attributed and random images."""

    n_removed: int
    seeds: tuple[int, ...]
    full: tuple[float, ...]
    attributed: tuple[float, ...]
    random: tuple[float, ...]

    @property
    def drop_attributed(self) -> float:
        return float(np.mean(np.subtract(self.full, self.attributed)))

    @property
    def drop_random(self) -> float:
        return float(np.mean(np.subtract(self.full, self.random)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(drop_attributed=self.drop_attributed, drop_random=self.drop_random,
                 drop_attributed_std=float(np.std(np.subtract(self.full, self.attributed))),
                 drop_random_std=float(np.std(np.subtract(self.full, self.random))))
        return d


def removal_check(train_fn: TrainFn, scores: np.ndarray, n_remove: int,
                  metric: Callable[[nn.Module], float], *, seeds: Sequence[int] = (0, 1, 2)
                  ) -> RemovalResult:
    """Retrain without the ``n_remove`` highest-scored images vs without ``n_remove``
    random ones (a new random draw per seed), for each seed; ``metric`` on each model."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    everything = np.arange(n)
    top = np.argsort(-scores, kind="stable")[:n_remove]
    keep_attr = np.setdiff1d(everything, top)
    full, attr, rand = [], [], []
    for s in seeds:
        rng = np.random.default_rng(10_000 + s)
        keep_rand = np.setdiff1d(everything, rng.choice(n, size=n_remove, replace=False))
        full.append(float(metric(train_fn(everything, s))))
        attr.append(float(metric(train_fn(keep_attr, s))))
        rand.append(float(metric(train_fn(keep_rand, s))))
    return RemovalResult(int(n_remove), tuple(int(s) for s in seeds), tuple(full), tuple(attr),
                         tuple(rand))
