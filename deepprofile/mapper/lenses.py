"""Lenses (filter functions) of mapper graphs, and the checks on their input.

A lens maps each activation vector to one or two numbers; the mapper cover is laid over
the lens range (:mod:`deepprofile.mapper.graph`). Named lenses: :data:`LENSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deepprofile.errors import (
    DeepProfileError,
    EmptyDatasetError,
    NonFiniteActivationError,
    ShapeError,
)

LENSES = ("l2norm", "pca", "pca2", "confidence", "entropy", "centroid")
"""Named lenses: L2 norm, first (two) principal components, softmax confidence,
predictive entropy, distance to the point's class centroid."""

LensSpec = str | np.ndarray | Callable[[np.ndarray], np.ndarray]


class UnknownLensError(DeepProfileError, ValueError):
    """A lens name that is not one of :data:`LENSES`."""


class MapperParameterError(DeepProfileError, ValueError):
    """A mapper parameter (intervals, overlap, clusterer, ...) is out of range."""


# --------------------------------------------------------------------------------------
# input checks and lenses
# --------------------------------------------------------------------------------------
def check_cloud(X: Any, name: str = "point cloud") -> np.ndarray:
    """Return ``X`` as a finite ``(N, D)`` float array, or raise a clear error."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ShapeError(f"The {name} must be 2-D (points x features); got shape {X.shape}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise EmptyDatasetError(
            f"The {name} is empty (shape {X.shape}); capture activations for at least a few "
            "samples first."
        )
    if not np.issubdtype(X.dtype, np.number):
        raise ShapeError(f"The {name} must be numeric; got dtype {X.dtype}.")
    X = X.astype(np.float64 if X.dtype == np.float64 else np.float32, copy=False)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise NonFiniteActivationError(
            f"The {name} holds {int(bad.sum())} NaN/inf values in {len(rows)} points "
            f"(first rows: {rows[:5].tolist()}). Check the capture (exploding activations?) or "
            "drop those samples."
        )
    return X


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confidence_from_logits(logits: np.ndarray) -> np.ndarray:
    """Largest softmax probability of each row (the model's confidence)."""
    return softmax(logits).max(axis=1)


def entropy_from_logits(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of the softmax distribution of each row."""
    p = softmax(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(p), 0.0)
    return -(p * logp).sum(axis=1)


def compute_lens(
    X: np.ndarray,
    lens: LensSpec = "l2norm",
    *,
    labels: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The lens (filter function) of every point, shape ``(N, d)`` with ``d`` 1 or 2.

    ``lens`` is a name from :data:`LENSES`, an array of ``N`` (or ``N x d``) values,
    or a callable ``f(X) -> array``. ``confidence``/``entropy`` need ``logits``;
    ``centroid`` needs ``labels``.
    """
    n = X.shape[0]
    if callable(lens) and not isinstance(lens, str):
        values = np.asarray(lens(X))
        source = "the lens callable"
    elif isinstance(lens, str):
        key = lens.lower().replace("-", "").replace("_", "")
        key = {"l2": "l2norm", "norm": "l2norm", "pca1": "pca"}.get(key, key)
        if key == "l2norm":
            values = np.linalg.norm(X.astype(np.float64), axis=1)
        elif key in ("pca", "pca2"):
            from sklearn.decomposition import PCA

            k = 1 if key == "pca" else 2
            if min(X.shape) < k:
                raise ShapeError(
                    f"lens {lens!r} needs at least {k} points and {k} features; got {X.shape}."
                )
            values = PCA(n_components=k, random_state=seed).fit_transform(X.astype(np.float64))
        elif key in ("confidence", "entropy"):
            if logits is None:
                raise MapperParameterError(
                    f"lens {lens!r} needs the model's logits; pass logits=... (the store has "
                    "them as store.logits) or pick lens='l2norm'."
                )
            logits = np.asarray(logits)
            if logits.ndim != 2 or logits.shape[0] != n:
                raise ShapeError(f"logits must be (N={n}, classes); got {logits.shape}.")
            values = confidence_from_logits(logits) if key == "confidence" else (
                entropy_from_logits(logits)
            )
        elif key == "centroid":
            if labels is None:
                raise MapperParameterError(
                    "lens 'centroid' (distance to the class centroid) needs labels=...."
                )
            labels = np.asarray(labels)
            values = np.empty(n)
            Xd = X.astype(np.float64)
            for c in np.unique(labels):
                rows = labels == c
                values[rows] = np.linalg.norm(Xd[rows] - Xd[rows].mean(axis=0), axis=1)
        else:
            raise UnknownLensError(
                f"Unknown lens {lens!r}. Choose one of {', '.join(LENSES)}, or pass an array "
                "of lens values or a callable f(X) -> array."
            )
        source = f"lens {lens!r}"
    else:
        values = np.asarray(lens)
        source = "the lens array"
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != n or values.shape[1] not in (1, 2):
        raise ShapeError(
            f"{source} must give one or two values per point, shape ({n},) or ({n}, 2); got "
            f"{values.shape}."
        )
    if not np.isfinite(values).all():
        raise NonFiniteActivationError(f"{source} produced NaN/inf values.")
    return values


def lens_name(lens: LensSpec) -> str:
    """A short JSON-friendly description of a lens."""
    if isinstance(lens, str):
        return lens
    if callable(lens):
        return f"callable:{getattr(lens, '__name__', type(lens).__name__)}"
    return "array"
