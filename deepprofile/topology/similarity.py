"""Centred kernel alignment (CKA) between layers: linear, RBF and minibatch.

* ``linear_cka`` (Kornblith et al. 2019): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on
  column-centred activations, computed in feature space (cheap when N >> width).
* ``rbf_cka``: Gaussian kernels with bandwidth ``sigma_frac`` x the median pairwise
  distance (Kornblith's choice), centred Gram matrices; O(N^2) memory.
* ``minibatch_cka`` (Nguyen, Raghu & Kornblith 2021): the unbiased HSIC estimator (Song et
  al. 2012) averaged over minibatches, ``mean HSIC1(K, L) / sqrt(mean HSIC1(K, K) mean
  HSIC1(L, L))``, so layers that do not fit in memory can be compared by streaming batches
  (:class:`MinibatchCKA`, :func:`store_minibatch_cka`).

All three are 1 for a layer with itself and invariant to orthogonal transforms and isotropic
scaling of either layer. Rows must be paired (the same images in the same order);
:func:`cka_matrix` pairs clouds by dataset index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from deepprofile.errors import NonFiniteActivationError, ShapeError
from deepprofile.topology.clouds import PointCloud

CKA_KINDS = ("linear", "rbf", "minibatch")


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ShapeError(f"CKA needs paired rows; got {len(x)} and {len(y)} samples.")
    if len(x) < 2:
        raise ShapeError("CKA needs at least 2 paired samples.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise NonFiniteActivationError("CKA input contains NaN/inf.")
    return x, y


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between ``(N, p)`` and ``(N, q)`` activations of the same N inputs."""
    x, y = _pair(x, y)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0


def _center(gram: np.ndarray) -> np.ndarray:
    gram = gram - gram.mean(axis=0, keepdims=True)
    return gram - gram.mean(axis=1, keepdims=True)


def rbf_gram(x: np.ndarray, sigma_frac: float = 0.8) -> np.ndarray:
    """Gaussian Gram matrix with bandwidth ``sigma_frac`` x median pairwise distance."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    off = d2[~np.eye(len(x), dtype=bool)]
    med = float(np.median(off)) if off.size else 0.0
    if med <= 0:
        return np.ones_like(d2)
    sigma2 = sigma_frac**2 * med
    return np.exp(-d2 / (2.0 * sigma2))


def rbf_cka(x: np.ndarray, y: np.ndarray, sigma_frac: float = 0.8) -> float:
    """RBF-kernel CKA (bandwidth relative to each layer's median distance)."""
    x, y = _pair(x, y)
    k = _center(rbf_gram(x, sigma_frac))
    ell = _center(rbf_gram(y, sigma_frac))
    norm = np.linalg.norm(k) * np.linalg.norm(ell)
    return float(np.sum(k * ell) / norm) if norm > 0 else 0.0


def hsic_unbiased(k: np.ndarray, ell: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of two ``(n, n)`` Gram matrices, n > 3."""
    n = len(k)
    if n < 4:
        raise ShapeError(f"The unbiased HSIC needs batches of at least 4 samples, got {n}.")
    kt = k.copy()
    lt = ell.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    ones_k, ones_l = kt.sum(axis=0), lt.sum(axis=0)
    value = (
        np.sum(kt * lt)
        + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2))
        - 2.0 * (ones_k @ ones_l) / (n - 2)
    )
    return float(value / (n * (n - 3)))


def _gram(x: np.ndarray, kernel: str, sigma_frac: float) -> np.ndarray:
    if kernel == "linear":
        return x @ x.T
    if kernel == "rbf":
        return rbf_gram(x, sigma_frac)
    raise ValueError(f"Unknown CKA kernel {kernel!r}; use 'linear' or 'rbf'.")


class MinibatchCKA:
    """Streaming CKA matrix between two sets of layers (Nguyen et al. 2021).

    Call :meth:`update` with one minibatch per call (``layer -> (b, ...)`` arrays for the
    same b inputs, for the row layers and the column layers); :meth:`matrix` returns the
    CKA matrix accumulated so far. Memory is one batch's Gram matrices.
    """

    def __init__(self, kernel: str = "linear", sigma_frac: float = 0.8) -> None:
        self.kernel = kernel
        self.sigma_frac = sigma_frac
        self._xy: np.ndarray | None = None
        self._xx: np.ndarray | None = None
        self._yy: np.ndarray | None = None
        self.n_batches_ = 0

    def update(self, batch_a: Mapping[str, np.ndarray] | Sequence[np.ndarray],
               batch_b: Mapping[str, np.ndarray] | Sequence[np.ndarray] | None = None
               ) -> MinibatchCKA:
        xs = list(batch_a.values()) if isinstance(batch_a, Mapping) else list(batch_a)
        ys = xs if batch_b is None else (
            list(batch_b.values()) if isinstance(batch_b, Mapping) else list(batch_b))
        grams_x = [_gram(_pair(x, x)[0], self.kernel, self.sigma_frac) for x in xs]
        grams_y = grams_x if batch_b is None else [
            _gram(_pair(y, y)[0], self.kernel, self.sigma_frac) for y in ys]
        if len({len(g) for g in grams_x + grams_y}) != 1:
            raise ShapeError("Every layer of one minibatch must hold the same samples.")
        xy = np.array([[hsic_unbiased(gx, gy) for gy in grams_y] for gx in grams_x])
        xx = np.array([hsic_unbiased(g, g) for g in grams_x])
        yy = xx if batch_b is None else np.array([hsic_unbiased(g, g) for g in grams_y])
        if self._xy is None:
            self._xy, self._xx, self._yy = xy, xx, yy
        else:
            if xy.shape != self._xy.shape:
                raise ShapeError("Minibatches must hold the same layers every time.")
            self._xy = self._xy + xy
            self._xx = self._xx + xx
            self._yy = self._yy + yy
        self.n_batches_ += 1
        return self

    def matrix(self) -> np.ndarray:
        if self._xy is None:
            raise ShapeError("No minibatch seen yet; call update() first.")
        denom = np.sqrt(np.clip(np.outer(self._xx, self._yy), 0.0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(denom > 0, self._xy / denom, 0.0)
        return out


def minibatch_cka(x: np.ndarray, y: np.ndarray, *, batch_size: int = 256,
                  kernel: str = "linear", seed: int = 0) -> float:
    """Minibatch CKA of two paired arrays: seeded shuffled batches of ``batch_size``
    (a last batch smaller than 4 is dropped)."""
    x, y = _pair(x, y)
    order = np.random.default_rng(seed).permutation(len(x))
    acc = MinibatchCKA(kernel)
    for start in range(0, len(x), batch_size):
        rows = order[start:start + batch_size]
        if len(rows) >= 4:
            acc.update([x[rows]], [y[rows]])
    return float(acc.matrix()[0, 0])


def _store_batches(store: Any, layers: Sequence[str], batch_size: int
                   ) -> Iterable[dict[str, np.ndarray]]:
    """Aligned row blocks of ``layers`` streamed from the store (checksums verified by
    :meth:`ActivationStore.iter_layer`), so a layer never has to fit in memory."""
    streams = [store.iter_layer(name, batch_size) for name in layers]
    for blocks in zip(*streams, strict=True):
        yield {name: block.reshape(len(block), -1)
               for name, (_, block) in zip(layers, blocks, strict=True)}


def store_minibatch_cka(store_a: Any, layers_a: Sequence[str], store_b: Any = None,
                        layers_b: Sequence[str] | None = None, *, batch_size: int = 256,
                        kernel: str = "linear") -> np.ndarray:
    """CKA matrix between layers of one store (or two stores of the same samples),
    streamed in row blocks of ``batch_size``."""
    for name in layers_a:
        store_a.reduction(name)  # unknown layers raise with close matches
    other = store_a if store_b is None else store_b
    layers_b = list(layers_a if layers_b is None else layers_b)
    for name in layers_b:
        other.reduction(name)
    if store_b is not None and not np.array_equal(store_a.indices, store_b.indices):
        raise ShapeError("The two stores hold different samples; CKA needs the same inputs.")
    acc = MinibatchCKA(kernel)
    pairs = zip(_store_batches(store_a, layers_a, batch_size),
                _store_batches(other, layers_b, batch_size), strict=True)
    for batch_a, batch_b in pairs:
        if len(next(iter(batch_a.values()))) >= 4:
            acc.update(batch_a, batch_b)
    return acc.matrix()


def aligned_points(a: PointCloud, b: PointCloud) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two clouds paired by dataset index (one point per image, and the same images
    in both: never a silent intersection)."""
    for cloud in (a, b):
        if len(np.unique(cloud.sample_ids)) != len(cloud.sample_ids):
            raise ShapeError(
                f"Cloud {cloud.layer!r} ({cloud.kind}) has several points per image; CKA needs "
                "one point per image (use the image or max_position cloud)."
            )
    common, ia, ib = np.intersect1d(a.sample_ids, b.sample_ids, return_indices=True)
    if len(common) != len(a.sample_ids) or len(common) != len(b.sample_ids):
        raise ShapeError(
            f"Clouds {a.layer!r} ({len(a.sample_ids)} images) and {b.layer!r} "
            f"({len(b.sample_ids)} images) share only {len(common)} images; CKA needs the "
            "same images in both. Use one shared sample for every layer "
            "(deepprofile.topology.cka_sample.shared_cka_clouds, which TopologyAnalysis uses) "
            "or the random/stratified sampler with the same seed."
        )
    if len(common) < 4:
        raise ShapeError(f"CKA needs at least 4 images; clouds {a.layer!r} and {b.layer!r} "
                         f"hold {len(common)}.")
    return a.points[ia], b.points[ib]


def cka(x: np.ndarray, y: np.ndarray, kind: str = "linear", **params: Any) -> float:
    """CKA of ``kind`` (``linear``, ``rbf`` or ``minibatch``) between paired arrays."""
    if kind == "linear":
        return linear_cka(x, y)
    if kind == "rbf":
        return rbf_cka(x, y, **params)
    if kind == "minibatch":
        return minibatch_cka(x, y, **params)
    raise ValueError(f"Unknown CKA kind {kind!r}; choose one of {', '.join(CKA_KINDS)}.")


def cka_matrix(clouds_a: Mapping[str, PointCloud] | Sequence[PointCloud],
               clouds_b: Mapping[str, PointCloud] | Sequence[PointCloud] | None = None,
               kind: str = "linear", **params: Any) -> np.ndarray:
    """Layer x layer CKA (within one model, or A rows x B columns), clouds paired by image."""
    rows = list(clouds_a.values()) if isinstance(clouds_a, Mapping) else list(clouds_a)
    cols = rows if clouds_b is None else (
        list(clouds_b.values()) if isinstance(clouds_b, Mapping) else list(clouds_b))
    out = np.zeros((len(rows), len(cols)))
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            if clouds_b is None and j < i:
                out[i, j] = out[j, i]
                continue
            out[i, j] = cka(*aligned_points(a, b), kind=kind, **params)
    return out


__all__ = [
    "CKA_KINDS", "MinibatchCKA", "aligned_points", "cka", "cka_matrix", "hsic_unbiased",
    "linear_cka", "minibatch_cka", "rbf_cka", "rbf_gram", "store_minibatch_cka",
]
