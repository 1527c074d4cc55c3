"""Which layer knows a concept: probes per layer with controls, sparsity and first layer.

For one concept and a set of layers (arrays of reduced activations, rows aligned with
the concept's labels) :func:`probe_layers` measures, per layer:

- the L2 and L1 logistic probes' stratified k-fold balanced accuracy (mean and spread);
- the shuffled-label control: the same L2 probe on ``n_shuffles`` permutations of the labels
  (its mean is chance for this data; ``selectivity`` = accuracy - control, Hewitt & Liang);
- the random-init control: the same probe on the random-init baseline model's activations
  (when given; Konz et al.'s "is it learned or is it the architecture?");
- ``decodable``: accuracy above the shuffled control by ``max(margin, 3 sd of the control)``;
- sparsity: the smallest number of units (ranked by the full L1 probe's standardised
  weights) whose L1 probe reaches ``sparsity_target`` (90%) of the full L1 accuracy.

The first decodable layer is the first one (in the given order) that is decodable and within
``margin`` of the best layer's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.concepts.probes import ProbeFit, _check_labels, cv_balanced_accuracy, fit_probe


@dataclass(frozen=True)
class LayerProbe:
    """One concept at one layer: probe accuracies, controls, sparsity (and location)."""

    layer: str
    accuracy: float
    accuracy_std: float
    l1_accuracy: float
    l1_accuracy_std: float
    shuffled_accuracy: float
    shuffled_std: float
    baseline_accuracy: float | None
    baseline_std: float | None
    decodable: bool
    n_units: int
    sparsity_k: int | None = None
    sparsity_units: tuple[int, ...] = ()
    sparsity_accuracy: float | None = None
    location: list[list[float]] | None = None  # (H, W) mean logit, positives - negatives

    @property
    def selectivity(self) -> float:
        return self.accuracy - self.shuffled_accuracy

    @property
    def gain_over_baseline(self) -> float | None:
        return None if self.baseline_accuracy is None else self.accuracy - self.baseline_accuracy

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["sparsity_units"] = list(self.sparsity_units)
        d["selectivity"] = self.selectivity
        d["gain_over_baseline"] = self.gain_over_baseline
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerProbe:
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["sparsity_units"] = tuple(kw.get("sparsity_units", ()))
        return cls(**kw)


@dataclass(frozen=True)
class ConceptProfile:
    """One concept across layers: per-layer probes, the first decodable layer, known or not."""

    concept: str
    n_samples: int
    n_positive: int
    layers: tuple[LayerProbe, ...]
    first_layer: str | None
    best_layer: str | None
    margin: float
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        """Whether any layer decodes the concept above its shuffled-label control."""
        return any(lp.decodable for lp in self.layers)

    def layer(self, name: str) -> LayerProbe:
        for lp in self.layers:
            if lp.layer == name:
                return lp
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "n_samples": self.n_samples,
                "n_positive": self.n_positive, "layers": [lp.to_dict() for lp in self.layers],
                "first_layer": self.first_layer, "best_layer": self.best_layer,
                "margin": self.margin, "known": self.known, "source": dict(self.source)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptProfile:
        return cls(d["concept"], int(d["n_samples"]), int(d["n_positive"]),
                   tuple(LayerProbe.from_dict(x) for x in d["layers"]), d["first_layer"],
                   d["best_layer"], float(d["margin"]), dict(d.get("source", {})))


def shuffled_control(X: np.ndarray, y: np.ndarray, *, n_shuffles: int = 5, n_splits: int = 5,
                     C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Mean CV balanced accuracy of the L2 probe on each of ``n_shuffles`` label permutations."""
    rng = np.random.default_rng([seed, 7919])
    return np.array([cv_balanced_accuracy(X, rng.permutation(y), penalty="l2", C=C,
                                          n_splits=n_splits, seed=seed).mean()
                     for _ in range(n_shuffles)])


def sparsity(X: np.ndarray, y: np.ndarray, l1_fit: ProbeFit, *, target: float = 0.9,
             C: float = 1.0, n_splits: int = 5, seed: int = 0
             ) -> tuple[int | None, tuple[int, ...], float | None]:
    """Smallest k such that the L1 probe on the top-k units reaches ``target`` x full accuracy.

    Units are ranked by the absolute standardised weight of the full L1 probe (ties and
    zeros ranked by the L2 probe's standardised weight). Candidate k grow geometrically
    (1, 2, 3, 4, 6, 8, 12, ...); returns (k, the k units, their accuracy).
    """
    X = X.reshape(len(X), -1)
    scale = X.std(axis=0)
    n = X.shape[1]
    goal = target * l1_fit.balanced_accuracy
    strength = np.abs(l1_fit.weight * scale)
    order = np.lexsort((-X.var(axis=0), -strength))  # strongest first
    ks: list[int] = []
    k = 1
    while k < n:
        ks.append(k)
        k = max(k + 1, int(round(k * 1.5)))
    ks.append(n)
    for k in ks:
        units = order[:k]
        acc = cv_balanced_accuracy(X[:, units], y, penalty="l1", C=C, n_splits=n_splits,
                                   seed=seed).mean()
        if acc >= goal:
            return k, tuple(int(u) for u in units), float(acc)
    return None, (), None


def probe_layers(
    activations: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    concept: str = "concept",
    baseline: Mapping[str, np.ndarray] | None = None,
    C: float = 1.0,
    n_splits: int = 5,
    n_shuffles: int = 5,
    margin: float = 0.05,
    sparsity_target: float = 0.9,
    locations: Mapping[str, list[list[float]]] | None = None,
    seed: int = 0,
    source: Mapping[str, Any] | None = None,
) -> tuple[ConceptProfile, dict[str, ProbeFit]]:
    """Probe ``labels`` in every layer of ``activations``; return the profile and the L2 fits."""
    layers = list(activations)
    n = len(next(iter(activations.values())))
    y = _check_labels(labels, n)
    rows: list[LayerProbe] = []
    fits: dict[str, ProbeFit] = {}
    for layer in layers:
        X = np.asarray(activations[layer], dtype=np.float64).reshape(n, -1)
        l2 = fit_probe(X, y, penalty="l2", C=C, seed=seed, n_splits=n_splits)
        l1 = fit_probe(X, y, penalty="l1", C=C, seed=seed, n_splits=n_splits)
        null = shuffled_control(X, y, n_shuffles=n_shuffles, n_splits=n_splits, C=C, seed=seed)
        base_acc = base_std = None
        if baseline is not None and layer in baseline:
            Xb = np.asarray(baseline[layer], dtype=np.float64).reshape(n, -1)
            scores = cv_balanced_accuracy(Xb, y, penalty="l2", C=C, n_splits=n_splits, seed=seed)
            base_acc, base_std = float(scores.mean()), float(scores.std())
        threshold = max(margin, 3.0 * float(null.std()))
        decodable = bool(l2.balanced_accuracy - float(null.mean()) >= threshold)
        k, units, k_acc = (sparsity(X, y, l1, target=sparsity_target, C=C, n_splits=n_splits,
                                    seed=seed) if decodable else (None, (), None))
        rows.append(LayerProbe(
            layer, l2.balanced_accuracy, l2.balanced_accuracy_std, l1.balanced_accuracy,
            l1.balanced_accuracy_std, float(null.mean()), float(null.std()), base_acc, base_std,
            decodable, X.shape[1], k, units, k_acc,
            None if locations is None else locations.get(layer)))
        fits[layer] = l2
    first, best = first_decodable_layer(rows, margin)
    return ConceptProfile(concept, n, int(y.sum()), tuple(rows), first, best, margin,
                          dict(source or {})), fits


def first_decodable_layer(rows: Sequence[LayerProbe], margin: float
                          ) -> tuple[str | None, str | None]:
    """(first decodable layer within ``margin`` of the best, best layer) among decodable ones."""
    good = [r for r in rows if r.decodable]
    if not good:
        return None, None
    best = max(good, key=lambda r: r.accuracy)
    for r in rows:
        if r.decodable and r.accuracy >= best.accuracy - margin:
            return r.layer, best.layer
    return best.layer, best.layer
