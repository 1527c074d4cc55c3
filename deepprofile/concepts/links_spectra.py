"""Is a concept's probe direction one of the layer's singular directions?

A linear probe on a layer's (channel) activations has a weight ``w`` in the layer's output
space. The layer's weight matrix ``W = U S V^T`` (:mod:`deepprofile.spectral.conv_svd`) has
output-side singular vectors ``u_j`` in the same space. The alignment of the concept with
``u_j`` is ``|cos(w, u_j)|``. Its null distribution is that of a uniformly random direction:
``|cos(r, u)|`` has the same law for every unit ``u`` (``cos^2 ~ Beta(1/2, (d-1)/2)``), so
``n_random`` seeded random directions against the top-``k`` vectors give a pooled empirical
null for each ``u_j`` and, for the best-aligned vector, a null of the maximum over ``k``.
Vectors whose p-value is below ``alpha / k`` (Bonferroni over the ``k`` vectors) are the
concept-selective ones; they become the concept's hyperedge in the class hypergraph of the
layer (:func:`concept_hypergraph`, built with :mod:`deepprofile.spectral.hypergraph`).

For a block (``layer2``) the weight layer is its last spatial convolution, the same choice as
the spectral analysis (:func:`deepprofile.spectral.pipeline.projection_layers`), so the
extended hypergraph shares its vertices with the class hypergraph in ``spectral.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepprofile.errors import ShapeError


@dataclass(frozen=True)
class DirectionAlignment:
    """Alignment of one probe direction with the top-``k`` output singular vectors."""

    layer: str
    weight_layer: str
    concept: str
    k: int
    cosine: tuple[float, ...]  # |cos(w, u_j)|, j = 0 .. k-1
    p_value: tuple[float, ...]  # per vector, pooled random-direction null
    p_value_exact: tuple[float, ...]  # per vector, Beta(1/2, (d-1)/2) tail
    max_cosine: float
    best_vector: int
    p_max: float  # best vector against the null of the maximum over k
    null_max_mean: float
    selective: tuple[int, ...]
    alpha: float
    n_random: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "weight_layer": self.weight_layer, "concept": self.concept,
            "k": self.k, "cosine": list(self.cosine), "p_value": list(self.p_value),
            "p_value_exact": list(self.p_value_exact), "max_cosine": self.max_cosine,
            "best_vector": self.best_vector, "p_max": self.p_max,
            "null_max_mean": self.null_max_mean, "selective": list(self.selective),
            "alpha": self.alpha, "n_random": self.n_random,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DirectionAlignment:
        return cls(
            layer=data["layer"], weight_layer=data["weight_layer"], concept=data["concept"],
            k=int(data["k"]), cosine=tuple(data["cosine"]), p_value=tuple(data["p_value"]),
            p_value_exact=tuple(data["p_value_exact"]), max_cosine=float(data["max_cosine"]),
            best_vector=int(data["best_vector"]), p_max=float(data["p_max"]),
            null_max_mean=float(data["null_max_mean"]),
            selective=tuple(int(v) for v in data["selective"]), alpha=float(data["alpha"]),
            n_random=int(data["n_random"]),
        )


def direction_alignment(
    weight: np.ndarray,
    U: np.ndarray,
    *,
    k: int | None = 16,
    n_random: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    layer: str = "",
    weight_layer: str = "",
    concept: str = "",
) -> DirectionAlignment:
    """``|cos(weight, u_j)|`` for the first ``k`` columns of ``U`` (``d x r``), with p-values.

    ``weight`` has length ``d`` (a probe over the layer's channels). ``U``'s columns must be
    orthonormal (left singular vectors, descending singular values).
    """
    from scipy.stats import beta

    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    U = np.asarray(U, dtype=np.float64)
    d = U.shape[0]
    if len(w) != d:
        raise ShapeError(
            f"Probe of {concept!r} on {layer!r} has {len(w)} weights but {weight_layer or 'the'} "
            f"weight layer has {d} output channels; alignment needs a probe over channels "
            "(mean, max or max_position activations)."
        )
    norm = np.linalg.norm(w)
    if not np.isfinite(norm) or norm == 0:
        raise ShapeError(f"Probe of {concept!r} on {layer!r} has a zero or non-finite weight.")
    kk = U.shape[1] if k is None else min(int(k), U.shape[1])
    basis = U[:, :kk]
    cos = np.abs(basis.T @ (w / norm))
    rng = np.random.default_rng(seed)
    rand = rng.standard_normal((int(n_random), d))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    null = np.abs(rand @ basis)  # (n_random, k)
    pooled = np.sort(null.reshape(-1))
    n_pool = len(pooled)
    p = (1 + n_pool - np.searchsorted(pooled, cos, side="left")) / (1 + n_pool)
    p_exact = beta.sf(cos**2, 0.5, (d - 1) / 2.0) if d > 1 else np.zeros_like(cos)
    null_max = null.max(axis=1)
    best = int(np.argmax(cos))
    p_max = (1 + int(np.sum(null_max >= cos[best]))) / (1 + len(null_max))
    selective = tuple(int(j) for j in np.flatnonzero(p < alpha / kk))
    return DirectionAlignment(
        layer=layer, weight_layer=weight_layer, concept=concept, k=kk,
        cosine=tuple(float(c) for c in cos), p_value=tuple(float(v) for v in p),
        p_value_exact=tuple(float(v) for v in p_exact), max_cosine=float(cos[best]),
        best_vector=best, p_max=float(p_max), null_max_mean=float(null_max.mean()),
        selective=selective, alpha=float(alpha), n_random=int(n_random),
    )


def concept_hypergraph(
    class_edges: Mapping[str, Sequence[int]],
    concept_edges: Mapping[str, Sequence[int]],
    *,
    n_vectors: int,
    layer: str = "",
    prefix: str = "concept:",
) -> dict[str, Any]:
    """The class hypergraph of a layer extended with one hyperedge per concept.

    Vertices are singular vectors ``0 .. n_vectors-1``; class hyperedges come from the
    spectral analysis (influential vectors per class), concept hyperedges are named
    ``prefix + concept`` and hold the concept-selective vectors. Returns the hypergraph's
    ``to_dict`` plus, per concept, the Jaccard index with every class hyperedge.
    """
    from deepprofile.spectral.hypergraph import build_hypergraph

    edges = {str(c): [int(v) for v in vs] for c, vs in class_edges.items()}
    named = {f"{prefix}{c}": [int(v) for v in vs] for c, vs in concept_edges.items()}
    edges.update(named)
    verts = max([n_vectors, *(max(vs) + 1 for vs in edges.values() if vs)])
    hg = build_hypergraph(edges, vertices=verts, layer=layer)
    out = hg.to_dict()
    index = {name: i for i, name in enumerate(hg.classes)}
    out["concept_class_jaccard"] = {
        name[len(prefix):]: {c: float(hg.overlaps[index[name], index[str(c)]])
                             for c in class_edges}
        for name in named
    }
    out["concept_edges"] = list(named)
    return out


__all__ = ["DirectionAlignment", "concept_hypergraph", "direction_alignment"]
