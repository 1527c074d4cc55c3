"""Result types of data attribution and the rankings computed from a score matrix.

:class:`DataAttributionResult` is what ``results/data_attribution.json`` holds: for
each target the top-k most helpful and most harmful training images (index, label,
score, ground-truth concepts when known), precision@k of a concept's top images
against its ground truth, and the provenance (checkpoint hashes, projection, seeds).
The full score matrices are ``.npy`` files beside it (``scores_files``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RankedImage:
    """One training image in a ranking."""

    index: int
    label: int
    score: float
    concepts: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankedImage:
        return cls(int(d["index"]), int(d["label"]), float(d["score"]),
                   tuple(d.get("concepts", ())))


@dataclass(frozen=True)
class Precision:
    """precision@k of a ranking against a ground-truth mask, with the base rate."""

    truth: str
    k: int
    precision: float
    base_rate: float

    @property
    def lift(self) -> float:
        return self.precision / self.base_rate if self.base_rate > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lift": self.lift}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Precision:
        return cls(str(d["truth"]), int(d["k"]), float(d["precision"]), float(d["base_rate"]))


@dataclass(frozen=True)
class TargetAttribution:
    """The training images that most raise (helpful) and lower (harmful) one target."""

    name: str
    kind: str  # "prediction", "class" (mean over test images predicted as it) or "concept"
    column: int
    n_images: int
    helpful: tuple[RankedImage, ...]
    harmful: tuple[RankedImage, ...]
    precision: Precision | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "column": self.column,
                "n_images": self.n_images, "helpful": [asdict(r) for r in self.helpful],
                "harmful": [asdict(r) for r in self.harmful],
                "precision": None if self.precision is None else self.precision.to_dict(),
                "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetAttribution:
        return cls(d["name"], d["kind"], int(d["column"]), int(d["n_images"]),
                   tuple(RankedImage.from_dict(r) for r in d["helpful"]),
                   tuple(RankedImage.from_dict(r) for r in d["harmful"]),
                   None if d.get("precision") is None else Precision.from_dict(d["precision"]),
                   dict(d.get("detail", {})))


@dataclass(frozen=True)
class DataAttributionResult:
    """``results/data_attribution.json``."""

    model: str
    train_dataset: dict[str, Any]
    n_train: int
    proj_dim: int
    projector_seed: int
    lambda_reg: float
    checkpoints: tuple[dict[str, Any], ...]
    seeds: tuple[int, ...]
    targets: tuple[TargetAttribution, ...]
    scores_files: dict[str, str]
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    ridge: float = 0.0  # relative to the mean eigenvalue of X^T X; 0 in older results

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = [t.to_dict() for t in self.targets]
        d["checkpoints"] = [dict(c) for c in self.checkpoints]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataAttributionResult:
        return cls(d["model"], dict(d["train_dataset"]), int(d["n_train"]), int(d["proj_dim"]),
                   int(d["projector_seed"]), float(d["lambda_reg"]),
                   tuple(dict(c) for c in d["checkpoints"]), tuple(d["seeds"]),
                   tuple(TargetAttribution.from_dict(t) for t in d["targets"]),
                   dict(d["scores_files"]), tuple(d.get("warnings", ())),
                   float(d.get("seconds", 0.0)), dict(d.get("versions", {})), d.get("date", ""),
                   float(d.get("ridge", 0.0)))


def top_k(scores: np.ndarray, k: int, labels: np.ndarray,
          concepts: Sequence[tuple[str, ...]] | None = None
          ) -> tuple[tuple[RankedImage, ...], tuple[RankedImage, ...]]:
    """Most helpful (highest score) and most harmful (lowest) ``k`` training images."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    k = min(k, len(scores))

    def row(i: int) -> RankedImage:
        return RankedImage(int(i), int(labels[i]), float(scores[i]),
                           tuple(concepts[i]) if concepts is not None else ())

    return (tuple(row(i) for i in order[:k]), tuple(row(i) for i in order[::-1][:k]))


def precision_at_k(scores: np.ndarray, truth: np.ndarray, k: int, name: str) -> Precision:
    """Share of the ``k`` highest-scored training images where ``truth`` holds, and the
    share over the whole training set (what a random ranking scores on average)."""
    truth = np.asarray(truth, dtype=bool)
    k = min(k, len(truth))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return Precision(name, k, float(truth[top].mean()), float(truth.mean()))
