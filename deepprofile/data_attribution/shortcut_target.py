"""The pipeline's ``shortcut:CONCEPT:CLASS`` target: does the model use CONCEPT for CLASS?

The counterfactual target of :mod:`.detector`: CLASS's margin on the run's test images
of the *other* classes that carry CONCEPT, minus the same margin on those without it.
The detector statistic is the summed TRAK score of the training images that carry
CONCEPT (TRAK's predicted drop of the target without them), as a z-score against
random groups with the same class counts; it fires at ``z >= 3`` (measured on the
demo's shapes CNN: docs/data_attribution.md, "The training-point-ranking detector").

Everything here is checked before the pipeline writes anything
(:func:`prepare_shortcut`); the scoring (:func:`score_shortcut`) runs after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from deepprofile.data_attribution.detector import (
    GroupEffect,
    RelabelledSubset,
    group_effect,
    shortcut_groups,
)
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.results import TargetAttribution, precision_at_k, top_k
from deepprofile.data_attribution.trak import DataAttributionError, TrakEnsemble
from deepprofile.errors import UnknownConceptError

PREFIX = "shortcut:"
Z_THRESHOLD = 3.0
"""The rule's threshold on the group z (5.9 below the lowest spurious z and 1.8 above
the highest clean z measured on the demo's shapes CNN with ``ridge=0``)."""


@dataclass(frozen=True)
class ShortcutDetection:
    """One ``shortcut:CONCEPT:CLASS`` target's detector result."""

    concept: str
    class_index: int
    class_name: str
    n_marked: int             # test images of the other classes with the concept
    n_unmarked: int           # ... and without it
    model_contrast: float     # the target's value on the final model (margin difference)
    effect: GroupEffect       # the concept's training images against random groups
    threshold: float = Z_THRESHOLD

    @property
    def fires(self) -> bool:
        return bool(np.isfinite(self.effect.z) and self.effect.z >= self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "class_index": self.class_index,
                "class_name": self.class_name, "n_marked": self.n_marked,
                "n_unmarked": self.n_unmarked, "model_contrast": self.model_contrast,
                "effect": self.effect.to_dict(), "threshold": self.threshold,
                "fires": self.fires}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShortcutDetection:
        e = d["effect"]
        effect = GroupEffect(int(e["n_group"]), float(e["effect"]), float(e["null_mean"]),
                             float(e["null_std"]), float(e["z"]), int(e["n_draws"]))
        return cls(str(d["concept"]), int(d["class_index"]), str(d["class_name"]),
                   int(d["n_marked"]), int(d["n_unmarked"]), float(d["model_contrast"]),
                   effect, float(d.get("threshold", Z_THRESHOLD)))


@dataclass(frozen=True)
class ShortcutJob:
    """A checked ``shortcut:`` target: what :func:`score_shortcut` needs."""

    spec: str
    concept: str
    class_index: int
    class_name: str
    rows: np.ndarray          # dataset indices of the scored test images (other classes)
    marked: np.ndarray        # concept mask over ``rows``
    train_mask: np.ndarray    # concept mask over the training set


def is_shortcut(target: str) -> bool:
    return target.startswith(PREFIX)


def parse_shortcut(target: str) -> tuple[str, str]:
    """``shortcut:CONCEPT:CLASS`` -> ``(CONCEPT, CLASS)``; a one-line error otherwise."""
    parts = target[len(PREFIX):].rsplit(":", 1)
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise DataAttributionError(
            f"Bad target {target!r}; write shortcut:CONCEPT:CLASS, e.g. shortcut:marker:circle.")
    return parts[0].strip(), parts[1].strip()


def resolve_class(token: str, names: Sequence[str]) -> int:
    """A class given by name or index; unknown ones list the known classes."""
    if token in names:
        return list(names).index(token)
    if token.isdigit() and int(token) < len(names):
        return int(token)
    raise DataAttributionError(
        f"Unknown class {token!r} in the shortcut target; known classes: {', '.join(names)}.")


def _spread_rows(rows: np.ndarray, n: int) -> np.ndarray:
    if len(rows) <= n:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, num=n).round().astype(int))]


def test_concept_mask(run_dir: Any, test_set: Dataset, store_rows: np.ndarray,
                      concept: str) -> np.ndarray:
    """The concept's mask over the run's store rows: the run's concept set
    (``deepprofile concepts``) when it has the concept, else the test set's own ground
    truth (``shapes``); an unknown concept lists the known ones."""
    from deepprofile.concepts.sets import ConceptSet, unknown_concept_message
    from deepprofile.data_attribution.pipeline import shapes_truth

    known: list[str] = []
    try:
        cset = ConceptSet.load(run_dir)
        if concept in cset.names:
            return cset.mask(concept)
        known += list(cset.names)
    except FileNotFoundError:
        pass
    truth = shapes_truth(test_set)
    if truth is not None and concept in truth[0].names:
        return truth[0].mask(concept)[np.asarray(store_rows)]
    known += list(truth[0].names) if truth is not None else []
    raise UnknownConceptError(unknown_concept_message(concept, sorted(set(known)))
                              + " The shortcut target needs it on the run's test images.")


def prepare_shortcut(target: str, *, class_names: Sequence[str], store_rows: np.ndarray,
                     store_labels: np.ndarray, test_mask: Any, train_truth: Any,
                     n_targets: int) -> ShortcutJob:
    """Check a ``shortcut:CONCEPT:CLASS`` target against the run and the training set.

    ``test_mask(concept)`` returns the concept's mask over the store rows (or raises
    :class:`UnknownConceptError`); ``train_truth`` is the training set's ground-truth
    :class:`~deepprofile.concepts.sets.ConceptSet` (``None`` when it has none). At most
    ``n_targets`` marked and ``n_targets`` unmarked test images are scored (spread).
    """
    concept, token = parse_shortcut(target)
    cls = resolve_class(token, class_names)
    if train_truth is None or concept not in train_truth.names:
        known = ", ".join(train_truth.names) if train_truth is not None else "(none)"
        raise UnknownConceptError(
            f"The training set has no ground truth for concept {concept!r} (the shortcut "
            f"target needs which training images carry it); known: {known}.")
    marked_all = np.asarray(test_mask(concept), dtype=bool)
    other = np.asarray(store_labels) != cls
    on = _spread_rows(np.flatnonzero(other & marked_all), n_targets)
    off = _spread_rows(np.flatnonzero(other & ~marked_all), n_targets)
    if len(on) == 0 or len(off) == 0:
        raise DataAttributionError(
            f"The shortcut target needs test images of classes other than "
            f"{class_names[cls]!r} with and without {concept!r} (found {len(on)} and "
            f"{len(off)}); capture a test set where part of every class carries it "
            "(for shapes: --marker-base-rate 0.5).")
    picked = np.sort(np.concatenate([on, off]))
    return ShortcutJob(target, concept, cls, str(class_names[cls]),
                       np.asarray(store_rows)[picked], marked_all[picked],
                       np.asarray(train_truth.mask(concept), dtype=bool))


@torch.no_grad()
def class_margins(model: nn.Module, images: Dataset, cls: int, batch_size: int = 64
                  ) -> np.ndarray:
    """``logit[cls] - logsumexp(other logits)`` of ``model`` on ``images`` (TRAK's margin
    with ``cls`` as the label)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):  # type: ignore[arg-type]
        x = torch.stack([images[i][0] for i in range(start, min(start + batch_size,
                                                              len(images)))])  # type: ignore[arg-type]
        logits = model(x).double()
        others = torch.cat([logits[:, :cls], logits[:, cls + 1:]], dim=1)
        out.append((logits[:, cls] - torch.logsumexp(others, dim=1)).numpy())
    return np.concatenate(out)


def score_shortcut(job: ShortcutJob, ens: TrakEnsemble, model: nn.Module, test_set: Dataset,
                   train_labels: np.ndarray, per_image: Sequence[tuple[str, ...]] | None,
                   k: int, n_draws: int = 2000) -> tuple[np.ndarray, TargetAttribution,
                                                         ShortcutDetection]:
    """TRAK scores ``(n_train,)`` of the job's counterfactual target, its ranking and
    the detector's group statistic for the concept's training images."""
    targets = RelabelledSubset(test_set, job.rows.tolist(), job.class_index)
    groups = shortcut_groups(job.marked)
    scores = ens.scores(MarginOutput(), targets, groups=groups)[:, 0]
    effect = group_effect(scores, job.train_mask, train_labels, n_draws=n_draws)
    m = class_margins(model, Subset(test_set, job.rows.tolist()), job.class_index)
    detection = ShortcutDetection(job.concept, job.class_index, job.class_name,
                                  int(job.marked.sum()), int((~job.marked).sum()),
                                  float(m[job.marked].mean() - m[~job.marked].mean()), effect)
    helpful, harmful = top_k(scores, k, train_labels, per_image)
    target = TargetAttribution(
        f"shortcut {job.concept} -> {job.class_name}", "shortcut", 0, len(job.rows),
        helpful, harmful, precision_at_k(scores, job.train_mask, k, job.concept),
        detail={"concept": job.concept, "class": job.class_index,
                "n_marked": detection.n_marked, "n_unmarked": detection.n_unmarked,
                "z": effect.z, "fires": detection.fires})
    return scores, target, detection
