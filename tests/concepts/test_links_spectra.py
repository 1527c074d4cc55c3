"""Probe directions against singular vectors: planted alignment, random null, hypergraph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta
from torch import nn

from deepprofile.concepts.links_spectra import (
    DirectionAlignment,
    concept_hypergraph,
    direction_alignment,
)
from deepprofile.errors import ShapeError
from deepprofile.spectral.conv_svd import layer_svd


def _orthonormal(d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_planted_direction_is_found():
    U = _orthonormal(32)
    rng = np.random.default_rng(1)
    w = 3.0 * U[:, 3] + 0.05 * rng.normal(size=32)
    res = direction_alignment(w, U, k=8, n_random=500, seed=0)
    assert res.best_vector == 3
    assert res.max_cosine > 0.98
    assert res.p_value[3] == pytest.approx(1 / (1 + 500 * 8))  # beats every null draw
    assert res.p_max == pytest.approx(1 / 501)
    assert res.selective == (3,)
    # independent check of the cosine
    assert res.cosine[3] == pytest.approx(abs(w @ U[:, 3]) / np.linalg.norm(w), rel=1e-12)


def test_random_direction_is_not_selective_and_null_matches_beta():
    d = 24
    U = _orthonormal(d, seed=2)
    w = np.random.default_rng(7).normal(size=d)
    res = direction_alignment(w, U, k=d, n_random=4000, seed=0)
    assert res.selective == ()
    assert res.p_max > 0.05
    # empirical random-direction p-values agree with the exact Beta(1/2, (d-1)/2) tail
    exact = beta.sf(np.asarray(res.cosine) ** 2, 0.5, (d - 1) / 2)
    np.testing.assert_allclose(res.p_value, exact, atol=0.01)
    np.testing.assert_allclose(res.p_value_exact, exact, rtol=1e-12)


def test_conv_output_singular_vector_and_roundtrip():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 12, 3)
    svd = layer_svd(conv, "conv", vectors=True)
    res = direction_alignment(svd.U[:, 1], svd.U, k=4, n_random=200, layer="conv",
                              weight_layer="conv", concept="c")
    assert res.best_vector == 1 and res.cosine[1] == pytest.approx(1.0)
    assert max(res.cosine[j] for j in (0, 2, 3)) < 1e-10  # orthogonal to the others
    assert DirectionAlignment.from_dict(res.to_dict()) == res


def test_probe_over_wrong_space_is_an_error():
    with pytest.raises(ShapeError, match="output channels"):
        direction_alignment(np.ones(5), _orthonormal(6))
    with pytest.raises(ShapeError, match="zero"):
        direction_alignment(np.zeros(6), _orthonormal(6))


def test_concept_hypergraph_extends_class_edges():
    out = concept_hypergraph({"cat": [0, 1], "dog": [2]}, {"marker": [1], "none": []},
                             n_vectors=4, layer="conv")
    assert out["edges"]["concept:marker"] == [1]
    assert out["concept_class_jaccard"]["marker"] == {"cat": 0.5, "dog": 0.0}
    assert out["concept_class_jaccard"]["none"] == {"cat": 0.0, "dog": 0.0}
    assert out["vertices"] == [0, 1, 2, 3]
    assert ["cat", "concept:marker"] in out["components"]["1"]
