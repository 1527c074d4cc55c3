"""CKA: identities, invariances, the Gram-matrix formula, minibatch against full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture.runner import capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.errors import ShapeError
from deepprofile.models.small import SmallResNet
from deepprofile.topology.clouds import cloud_from_array, clouds_from_store
from deepprofile.topology.similarity import (
    MinibatchCKA,
    cka_matrix,
    hsic_unbiased,
    linear_cka,
    minibatch_cka,
    rbf_cka,
    store_minibatch_cka,
)


def _pair(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    y = np.tanh(x @ rng.normal(size=(12, 8))) + 0.3 * rng.normal(size=(n, 8))
    return x, y


def test_cka_with_itself_is_one() -> None:
    x, _ = _pair()
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert rbf_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert minibatch_cka(x, x, batch_size=100) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("fn", [linear_cka, rbf_cka,
                                lambda a, b: minibatch_cka(a, b, batch_size=100)])
def test_cka_invariances(fn) -> None:
    x, y = _pair()
    q, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(8, 8)))
    base = fn(x, y)
    assert 0.0 < base < 1.0
    assert fn(x, y @ q) == pytest.approx(base, rel=1e-9)  # orthogonal transform
    assert fn(x * 7.5, y) == pytest.approx(base, rel=1e-9)  # isotropic scaling
    assert fn(x, y) == pytest.approx(fn(y, x), rel=1e-9)


def test_linear_cka_equals_gram_formula() -> None:
    x, y = _pair(n=80)
    h = np.eye(80) - 1.0 / 80
    k, ell = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    expected = np.sum(k * ell) / (np.linalg.norm(k) * np.linalg.norm(ell))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_unbiased_hsic_formula_against_loops() -> None:
    rng = np.random.default_rng(0)
    n = 9
    k = rng.normal(size=(n, n))
    k = k @ k.T
    ell = rng.normal(size=(n, n))
    ell = ell @ ell.T
    kt, lt = k - np.diag(np.diag(k)), ell - np.diag(np.diag(ell))
    # Song et al. (2012), eq. 5, written out term by term
    term1 = np.trace(kt @ lt)
    term2 = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    term3 = 2.0 * np.ones(n) @ kt @ lt @ np.ones(n) / (n - 2)
    expected = (term1 + term2 - term3) / (n * (n - 3))
    assert hsic_unbiased(k, ell) == pytest.approx(expected, rel=1e-10)


def test_minibatch_cka_close_to_full() -> None:
    x, y = _pair(n=3000, seed=1)
    full = linear_cka(x, y)
    mb = minibatch_cka(x, y, batch_size=500, seed=0)
    assert mb == pytest.approx(full, abs=0.03)
    mb_rbf = minibatch_cka(x, y, batch_size=500, kernel="rbf")
    assert mb_rbf == pytest.approx(rbf_cka(x, y), abs=0.05)


def test_streamed_store_cka_matches_in_memory(tmp_path) -> None:
    torch.manual_seed(0)
    model = SmallResNet(widths=(4, 8, 8)).eval()
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(96, 1, 12, 12)).astype(np.float32),
                        rng.integers(0, 3, 96))
    store = capture_to_store(model, data, ["layer1", "layer2", "layer3"],
                             tmp_path / "s.zarr", reductions="mean", quiet=True,
                             chunk_size=32, batch_size=32)
    streamed = store_minibatch_cka(store, ["layer1", "layer2", "layer3"], batch_size=32)
    acc = MinibatchCKA()
    arrays = {name: store.layer(name) for name in ["layer1", "layer2", "layer3"]}
    for start in range(0, 96, 32):
        acc.update({n: a[start:start + 32] for n, a in arrays.items()})
    np.testing.assert_allclose(streamed, acc.matrix(), rtol=1e-10)
    np.testing.assert_allclose(np.diag(streamed), 1.0, rtol=1e-12)
    clouds = clouds_from_store(store, kind="image", n_points=None, normalize="none")
    full = cka_matrix(clouds)
    assert np.abs(streamed - full).max() < 0.25  # small batches: a noisy estimate
    with pytest.raises(KeyError):
        store_minibatch_cka(store, ["layer9"])


def test_cka_matrix_pairs_by_image_and_rejects_multi_point_clouds() -> None:
    x, y = _pair(n=100)
    a = cloud_from_array(x, layer="a")
    b = cloud_from_array(y, layer="b")
    shuffled = type(b)(**{**b.__dict__, "points": b.points[::-1],
                          "sample_ids": b.sample_ids[::-1]})
    mat = cka_matrix([a, b])
    np.testing.assert_allclose(mat, mat.T)
    np.testing.assert_allclose(np.diag(mat), 1.0)
    assert mat[0, 1] == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert cka_matrix([a], [shuffled])[0, 0] == pytest.approx(linear_cka(x, y), rel=1e-12)
    doubled = type(a)(**{**a.__dict__, "sample_ids": np.repeat(a.sample_ids[:50], 2)})
    with pytest.raises(ShapeError, match="one point per image"):
        cka_matrix([doubled, b])
