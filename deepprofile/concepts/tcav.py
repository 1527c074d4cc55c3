"""TCAV (Kim et al. 2018) through captum, with a random-concept t-test per layer and class.

For each layer, captum trains one CAV per experimental set ``[concept, random_j]`` and one
per ``[random_j, random_j+1]`` (the null, a cycle over the random sets), then scores the
fraction of a class's inputs whose directional derivative along the CAV is positive
(``sign_count``). The concept's scores over the ``n_random`` random counter-concepts are
compared with the random-vs-random scores by a two-sided Welch t-test
(``scipy.stats.ttest_ind``); the p-value is reported and the concept is significant for
(layer, class) when ``p < alpha``. A layer followed only by linear maps (global pool + fc)
has the same gradient for every input, so its sign counts are all 0 or 1: prefer layers
with a non-linearity after them. captum caches CAVs and activations on disk by
``model_id``; every call uses a fresh temporary directory so stale CAVs never return.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import ConceptDataError

MIN_RANDOM = 10


@dataclass(frozen=True)
class TCAVScore:
    """TCAV of one concept at one layer for one class."""

    concept: str
    layer: str
    target: int
    score: float              # mean sign_count over the random counter-concepts
    score_std: float
    random_score: float       # mean sign_count of random-vs-random CAVs (the null)
    random_std: float
    p_value: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TCAVScore:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TCAVResult:
    """Every (concept, layer, class) score of one TCAV run, with its parameters."""

    scores: tuple[TCAVScore, ...]
    n_random: int
    n_concept_images: int
    n_inputs: int
    alpha: float
    seed: int

    def get(self, concept: str, layer: str, target: int) -> TCAVScore:
        for s in self.scores:
            if (s.concept, s.layer, s.target) == (concept, layer, int(target)):
                return s
        raise KeyError((concept, layer, target))

    def to_dict(self) -> dict[str, Any]:
        return {"scores": [s.to_dict() for s in self.scores], "n_random": self.n_random,
                "n_concept_images": self.n_concept_images, "n_inputs": self.n_inputs,
                "alpha": self.alpha, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TCAVResult:
        return cls(tuple(TCAVScore.from_dict(s) for s in d["scores"]), int(d["n_random"]),
                   int(d["n_concept_images"]), int(d["n_inputs"]), float(d["alpha"]),
                   int(d["seed"]))


def _batches(images: torch.Tensor, batch_size: int = 64) -> list[torch.Tensor]:
    return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def tcav_scores(
    model: nn.Module,
    layers: Sequence[str],
    concepts: Mapping[str, torch.Tensor],
    random_pool: torch.Tensor,
    inputs_by_class: Mapping[int, torch.Tensor],
    *,
    n_random: int = MIN_RANDOM,
    n_concept_images: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> TCAVResult:
    """TCAV scores and random-concept t-tests.

    ``concepts``: name -> positive images ``(m, C, H, W)``; ``random_pool``: images from
    which ``n_random + 1`` random counter-concepts of the same size are drawn (seeded);
    ``inputs_by_class``: class id -> the images whose predictions are explained. Each
    concept-vs-random set draws its own ``n_concept_images`` from the concept's images.
    """
    from captum.concept import TCAV, Concept
    from scipy.stats import ttest_ind

    from deepprofile.capture.selectors import resolve_layers

    if n_random < 2:
        raise ValueError(f"TCAV needs n_random >= 2 random counter-concepts (>= {MIN_RANDOM} "
                         f"recommended), got {n_random}.")
    layers = resolve_layers(model, list(layers))
    sizes = [len(v) for v in concepts.values()]
    if not sizes or min(sizes) < 2:
        raise ConceptDataError("Every TCAV concept needs at least 2 positive images.")
    m = int(n_concept_images or min(sizes))
    if len(random_pool) < m:
        raise ConceptDataError(
            f"TCAV random counter-concepts need {m} images each but the pool has "
            f"{len(random_pool)}; use fewer concept images (n_concept_images).")
    from deepprofile.concepts.capture import model_device

    device = model_device(model)
    random_pool = random_pool.to(device)
    concepts = {name: images.to(device) for name, images in concepts.items()}
    inputs_by_class = {int(c): images.to(device) for c, images in inputs_by_class.items()}
    rng = np.random.default_rng(seed)
    randoms = [Concept(1000 + j, f"random_{j}", _batches(
        random_pool[rng.choice(len(random_pool), m, replace=False)]))
        for j in range(n_random)]
    # the null: each random set against the next one (a cycle), so every counter-concept
    # appears in both arms and no single random set dominates the null
    null_sets = [[randoms[j], randoms[(j + 1) % n_random]] for j in range(n_random)]
    scores: list[TCAVScore] = []
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="deepprofile-tcav-") as tmp:
            # captum keeps CAVs by model_id under save_path: a fresh folder per run.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Using default classifier")
                tcav = TCAV(model, layers, model_id="run", save_path=tmp)
            for cid, (name, images) in enumerate(concepts.items()):
                # a fresh draw of the concept's images per random counter-concept, so the
                # concept arm varies like the null arm (one fixed draw inflates false alarms)
                label = re.sub(r"\W", "_", name)
                sets = [[Concept(10_000 * (cid + 1) + j, label, _batches(images[rng.choice(
                    len(images), min(m, len(images)), replace=False)])), randoms[j]]
                    for j in range(n_random)]
                for target, inputs in inputs_by_class.items():
                    with torch.enable_grad(), warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # captum's list->tensor
                        out = tcav.interpret(inputs, sets + null_sets, target=int(target))
                    for layer in layers:
                        conc = np.array([float(out[_key(s)][layer]["sign_count"][0])
                                         for s in sets])
                        null = np.array([float(out[_key(s)][layer]["sign_count"][0])
                                         for s in null_sets])
                        p = _ttest_p(conc, null, ttest_ind)
                        scores.append(TCAVScore(
                            name, layer, int(target), float(conc.mean()), float(conc.std()),
                            float(null.mean()), float(null.std()), p, bool(p < alpha)))
    finally:
        model.train(was_training)
    return TCAVResult(tuple(scores), n_random, m, max(len(v) for v in inputs_by_class.values()),
                      alpha, seed)


def _key(concepts: Sequence[Any]) -> str:
    return "-".join(str(c.id) for c in concepts)


def _ttest_p(a: np.ndarray, b: np.ndarray, ttest_ind) -> float:
    """Two-sided Welch p-value; identical constant samples give p = 1 (no evidence)."""
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        return 1.0 if np.isclose(a[0], b[0]) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant samples
        return float(ttest_ind(a, b, equal_var=False).pvalue)
