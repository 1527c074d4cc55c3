"""Which training images taught a model a shortcut? A counterfactual TRAK target.

The training-point-ranking detector of a spurious signal (the marker of ``shapes``)
asks whether the training images TRAK ranks most helpful are the marked ones. Its
first target, the spurious class's margin on the test images *predicted* as that
class, cannot show it: those images are mostly true members of the class, the
training images that teach the class's *shape* are what raises their margin, and
TRAK's ``Q = 1 - p`` factor gives the well-fitted (marked) members small scores.
Measured on the demo's shapes CNN, the marked circles were ranked *below* the
unmarked ones (AUC 0.03 within the circles; docs/data_attribution.md).

The counterfactual target isolates the shortcut: the spurious class's margin on
test images of the *other* classes that carry the marker, minus the same margin on
unmarked images of the other classes. Only a link "marker -> spurious class" moves
it; what teaches the shapes moves both terms alike and cancels. TRAK is linear in
the target gradient, so the contrast is a signed group of per-image targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.results import precision_at_k
from deepprofile.data_attribution.trak import DataAttributionError, TrakEnsemble


class RelabelledSubset(Dataset):
    """The images of ``dataset[rows]`` with every label replaced by ``label``: TRAK's
    margin output then measures ``label``'s margin on them (a counterfactual class)."""

    def __init__(self, dataset: Dataset, rows: Sequence[int], label: int) -> None:
        self.dataset, self.rows, self.label = dataset, [int(r) for r in rows], int(label)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[self.rows[i]][0], self.label


def shortcut_groups(marked: np.ndarray, contrast: bool = True) -> np.ndarray:
    """``(1, n)`` target weights over the other-class test images: the mean over the
    marked ones, minus the mean over the unmarked ones when ``contrast``."""
    marked = np.asarray(marked, dtype=bool)
    if marked.sum() == 0 or (contrast and (~marked).sum() == 0):
        raise DataAttributionError(
            "The shortcut target needs test images of the other classes with and without "
            "the marker; use a test set where part of every class is marked.")
    w = marked / marked.sum()
    if contrast:
        w = w - (~marked) / (~marked).sum()
    return w[None, :].astype(np.float64)


def shortcut_scores(ens: TrakEnsemble, test_set: Dataset, labels: np.ndarray,
                    marked: np.ndarray, spurious_class: int, contrast: bool = True
                    ) -> np.ndarray:
    """TRAK scores ``(n_train,)`` of the counterfactual target: the margin of
    ``spurious_class`` on the test images of the other classes, marked minus unmarked
    (``contrast``) or marked only. Positive = training on the image raised it."""
    labels, marked = np.asarray(labels), np.asarray(marked, dtype=bool)
    other = np.flatnonzero(labels != spurious_class)
    groups = shortcut_groups(marked[other], contrast)
    targets = RelabelledSubset(test_set, other, spurious_class)
    return ens.scores(MarginOutput(), targets, groups=groups)[:, 0]


@dataclass(frozen=True)
class RankingPrecision:
    """precision@k of a ranking against a mask, overall and within one class."""

    k: int
    precision: float
    base_rate: float
    precision_in_class: float
    base_rate_in_class: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranking_precision(scores: np.ndarray, truth: np.ndarray, labels: np.ndarray,
                      cls: int, k: int) -> RankingPrecision:
    """precision@k of the ``k`` highest ``scores`` against ``truth`` with its base rate,
    and the same among the images of class ``cls`` only (the marker is planted on most
    of the spurious class, so a ranking that picks that class at random already beats
    the overall base rate; within the class it must beat the class's marked share)."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    inside = np.flatnonzero(np.asarray(labels) == cls)
    overall = precision_at_k(scores, truth, k, "")
    in_class = precision_at_k(scores[inside], truth[inside], k, "")
    return RankingPrecision(int(k), overall.precision, overall.base_rate,
                            in_class.precision, in_class.base_rate)


@dataclass(frozen=True)
class GroupEffect:
    """TRAK's predicted effect of a group of training images on a target, against
    random groups with the same number of images from each class."""

    n_group: int
    effect: float       # sum of the group's scores: the target's predicted drop without them
    null_mean: float
    null_std: float
    z: float
    n_draws: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_effect(scores: np.ndarray, group: np.ndarray, labels: np.ndarray,
                 n_draws: int = 2000, seed: int = 0) -> GroupEffect:
    """Sum of ``scores`` over ``group`` (TRAK's linear datamodel: how much the target
    drops when the whole group is left out of training), and its z-score against
    ``n_draws`` random groups drawn class by class with the group's class counts.

    Why not precision@k: TRAK's ``(Phi^T Phi)^-1`` gives rare training images large
    scores, so the few marked images of a model *without* the shortcut rank on top
    too (measured on the clean shapes model: precision@20 0.35-0.60 against a base
    rate of 0.05). The group's total effect counts how much the target depends on
    the group, which is what separates a model that uses the marker from one that
    does not.
    """
    scores = np.asarray(scores, dtype=np.float64)
    group, labels = np.asarray(group, dtype=bool), np.asarray(labels)
    if group.sum() == 0:
        raise DataAttributionError("The group of training images is empty.")
    rng = np.random.default_rng(seed)
    null = np.zeros(n_draws)
    for c in np.unique(labels[group]):
        members = np.flatnonzero(labels == c)
        k = int((group & (labels == c)).sum())
        for d in range(n_draws):
            null[d] += scores[rng.choice(members, size=k, replace=False)].sum()
    effect = float(scores[group].sum())
    std = float(null.std())
    return GroupEffect(int(group.sum()), effect, float(null.mean()), std,
                       float((effect - null.mean()) / std) if std > 0 else float("nan"),
                       int(n_draws))
