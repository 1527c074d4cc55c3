"""Linear concept probes on stored activations (Alain & Bengio; Konz et al. 2023).

:func:`fit_probe` standardises the features, fits scikit-learn's logistic regression (L2 or
L1, balanced class weights) and scores it by stratified k-fold balanced accuracy; the scaler
is folded into the weights so a :class:`ConceptProbe` works on RAW reduced activations:
``logit = x @ weight + bias``. :meth:`ConceptProbe.as_module` turns a probe into a
differentiable ``images -> concept logit`` module (for attributions and TRAK).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import ConceptDataError, MissingFileError, ShapeError

PROBES_FILE = "probes.npz"


@dataclass(frozen=True)
class ProbeFit:
    """A fitted probe in raw feature space with its cross-validated balanced accuracy."""

    weight: np.ndarray
    bias: float
    balanced_accuracy: float          # mean over folds
    balanced_accuracy_std: float      # spread over folds
    fold_scores: tuple[float, ...]
    penalty: str
    C: float
    n_samples: int
    n_positive: int

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.weight))


def _check_labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ConceptDataError(
            f"Concept labels must be one boolean per sample ({n}); got shape {y.shape}.")
    y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        raise ConceptDataError(
            f"The concept is {'present in every' if n_pos else 'absent from every'} one of the "
            f"{n} samples, so a probe has only one class; give negatives (--negatives DIR) or a "
            "concept that holds for some samples and not others.")
    if min(n_pos, n - n_pos) < 2:
        raise ConceptDataError(
            f"The concept has only {min(n_pos, n - n_pos)} sample(s) on one side; a probe needs "
            "at least 2 positives and 2 negatives.")
    return y


def _estimator(penalty: str, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    solver = "liblinear" if penalty == "l1" else "lbfgs"
    return LogisticRegression(penalty=penalty, C=C, solver=solver, class_weight="balanced",
                              max_iter=2000, random_state=seed)


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    return (X - mean) / scale, mean, scale


def _fit_raw(X: np.ndarray, y: np.ndarray, penalty: str, C: float,
             seed: int) -> tuple[np.ndarray, float]:
    Z, mean, scale = _standardise(X)
    est = _estimator(penalty, C, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on separable data
        est.fit(Z, y)
    w = est.coef_[0] / scale
    b = float(est.intercept_[0] - np.dot(est.coef_[0], mean / scale))
    return w.astype(np.float64), b


def cv_balanced_accuracy(X: np.ndarray, y: np.ndarray, *, penalty: str = "l2", C: float = 1.0,
                         n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Balanced accuracy per stratified fold (scaler fitted inside each fold)."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    n_pos = int(y.sum())
    k = max(2, min(n_splits, n_pos, len(y) - n_pos))
    scores = []
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y):
        w, b = _fit_raw(X[train], y[train], penalty, C, seed)
        scores.append(balanced_accuracy_score(y[test], X[test] @ w + b > 0))
    return np.asarray(scores)


def fit_probe(X: np.ndarray, y: np.ndarray, *, penalty: str = "l2", C: float = 1.0,
              seed: int = 0, n_splits: int = 5) -> ProbeFit:
    """Fit a logistic-regression probe ``y ~ X`` and its k-fold balanced accuracy.

    ``X`` is ``(n, ...)`` raw reduced activations (flattened per sample); ``y`` booleans.
    The returned weight/bias act on raw activations (the standardisation is folded in).
    """
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(len(X), -1)
    y = _check_labels(y, len(X))
    scores = cv_balanced_accuracy(X, y, penalty=penalty, C=C, n_splits=n_splits, seed=seed)
    w, b = _fit_raw(X, y, penalty, C, seed)
    return ProbeFit(w, b, float(scores.mean()), float(scores.std()), tuple(map(float, scores)),
                    penalty, float(C), len(y), int(y.sum()))


# -- differentiable reductions (the same as capture's, but keeping the graph) --------------
def reduce_differentiable(output: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a layer output ``(N, C, ...)`` like the store did, keeping gradients.

    ``positions:k`` stores draw k positions per image; their probe is applied to every
    position and averaged, which (the probe being linear) equals the probe on the mean.
    """
    kind = str(reduction).split(":")[0]
    if kind == "flatten":
        return output.reshape(output.shape[0], -1)
    if output.ndim < 2:
        raise ShapeError(f"Cannot reduce an output of shape {tuple(output.shape)}.")
    flat = output.reshape(output.shape[0], output.shape[1], -1)
    if kind in ("mean", "positions"):
        return flat.mean(dim=2)
    if kind == "max":
        return flat.amax(dim=2)
    if kind == "max_position":
        best = flat.detach().norm(dim=1).argmax(dim=1)
        return flat.gather(2, best.view(-1, 1, 1).expand(-1, flat.shape[1], 1)).squeeze(2)
    raise ValueError(f"Unknown reduction {reduction!r}")


class _StopForward(Exception):
    """Raised by the probe hook once the layer has run: the rest of the network is skipped."""


class ProbeModule(nn.Module):
    """``images -> concept logit (n,)``: the network up to ``layer``, the store's reduction,
    then the probe. The model is a registered submodule (its parameters are this module's
    parameters); the forward hook exists only during each forward call."""

    def __init__(self, model: nn.Module, probe: ConceptProbe) -> None:
        super().__init__()
        from deepprofile.capture.selectors import resolve_layers

        self.model = model
        self.layer = resolve_layers(model, [probe.layer])[0]
        self.reduction = probe.reduction
        from deepprofile.concepts.capture import model_device

        device = model_device(model)
        self.register_buffer("weight", torch.as_tensor(probe.weight, dtype=torch.float32,
                                                       device=device))
        self.register_buffer("bias", torch.tensor(float(probe.bias), device=device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from deepprofile.capture.hooks import first_tensor, register_forward_hooks, remove_hooks

        captured: dict[str, torch.Tensor] = {}

        def hook(module: nn.Module, args: tuple, output: object) -> None:
            captured["out"] = first_tensor(output, self.layer)
            raise _StopForward

        handles = register_forward_hooks(self.model, [(self.layer, hook)])
        try:
            self.model(images)
        except _StopForward:
            pass
        finally:
            remove_hooks(handles)
        if "out" not in captured:
            raise RuntimeError(f"Layer {self.layer!r} did not run in the forward pass.")
        feats = reduce_differentiable(captured["out"], self.reduction)
        feats = feats.reshape(feats.shape[0], -1)
        if feats.shape[1] != self.weight.shape[0]:
            raise ShapeError(
                f"Probe for {self.layer!r} expects {self.weight.shape[0]} features, the layer "
                f"gives {feats.shape[1]}; use the model the probe was fitted on.")
        return feats @ self.weight.to(feats.dtype) + self.bias.to(feats.dtype)


@dataclass(frozen=True, eq=False)
class ConceptProbe:
    """A linear concept probe in RAW reduced-activation space (the scaler is folded in)."""

    layer: str
    concept: str
    reduction: str
    store_name: str
    weight: np.ndarray
    bias: float
    balanced_accuracy: float
    balanced_accuracy_std: float = 0.0
    penalty: str = "l2"
    C: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fit(cls, fit: ProbeFit, *, layer: str, concept: str, reduction: str,
                 store_name: str, **meta: Any) -> ConceptProbe:
        return cls(layer, concept, reduction, store_name, np.asarray(fit.weight), fit.bias,
                   fit.balanced_accuracy, fit.balanced_accuracy_std, fit.penalty, fit.C,
                   dict(meta))

    def logit(self, activations: np.ndarray) -> np.ndarray:
        """Concept logits of raw reduced activations ``(n, ...)`` (``positions``: ``(n, k, C)``
        gives the mean over the k positions)."""
        a = np.asarray(activations, dtype=np.float64)
        if str(self.reduction).startswith("positions") and a.ndim == 3:
            a = a.mean(axis=1)
        a = a.reshape(len(a), -1)
        if a.shape[1] != len(self.weight):
            raise ShapeError(
                f"Probe {self.concept!r}@{self.layer} expects {len(self.weight)} features per "
                f"sample, got {a.shape[1]}.")
        return a @ self.weight + self.bias

    def as_module(self, model: nn.Module) -> nn.Module:
        """``images -> concept logit (n,)`` through ``model`` up to ``layer`` (differentiable)."""
        return ProbeModule(model, self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "concept": self.concept, "reduction": self.reduction,
            "store_name": self.store_name, "weight": self.weight.tolist(), "bias": self.bias,
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_std": self.balanced_accuracy_std, "penalty": self.penalty,
            "C": self.C, "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConceptProbe:
        return cls(d["layer"], d["concept"], d["reduction"], d["store_name"],
                   np.asarray(d["weight"], dtype=np.float64), float(d["bias"]),
                   float(d["balanced_accuracy"]), float(d.get("balanced_accuracy_std", 0.0)),
                   d.get("penalty", "l2"), float(d.get("C", 1.0)), dict(d.get("meta", {})))


def save_probes(run_dir: str | Path, probes: Sequence[ConceptProbe]) -> Path:
    """Write ``RUN_DIR/concepts/probes.npz`` (weights as arrays, the rest as JSON)."""
    from deepprofile.concepts.sets import CONCEPTS_DIR

    folder = Path(run_dir) / CONCEPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": np.asarray(p.weight) for i, p in enumerate(probes)}
    meta = []
    for p in probes:
        d = p.to_dict()
        d.pop("weight")
        meta.append(d)
    from deepprofile.results import jsonable

    arrays["meta"] = np.array(json.dumps(jsonable(meta)))
    path = folder / PROBES_FILE
    tmp = folder / f".{PROBES_FILE}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_probes(run_dir: str | Path) -> list[ConceptProbe]:
    """Read the probes :func:`save_probes` wrote."""
    from deepprofile.concepts.sets import CONCEPTS_DIR

    path = Path(run_dir) / CONCEPTS_DIR / PROBES_FILE
    if not path.exists():
        raise MissingFileError(f"No probes at {path}. Run `deepprofile concepts {run_dir}` first.")
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
        return [ConceptProbe.from_dict({**m, "weight": npz[f"w{i}"]}) for i, m in enumerate(meta)]
