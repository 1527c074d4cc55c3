"""Singular value decomposition of convolution and linear weights.

Two different spectra belong to a convolution layer, and this module computes both:

* **The unfolded weight matrix** (Praggastis et al. 2022, arXiv 2208.06894). A weight of shape
  ``(d, c, k, k)`` is reshaped to a ``d x (c*k*k)`` matrix ``W = U S V^T``. Applied to the
  unfolded input patch at one output position it gives the layer's output minus bias there, so
  ``U^T (out - bias) = S V^T patches`` (see :mod:`deepprofile.spectral.projection`). Its
  singular values describe what the filter bank does to *one patch*; they do not depend on the
  input size, stride, padding or dilation. This is the matrix the random-matrix analysis
  (:mod:`deepprofile.spectral.rmt`) studies.
* **The layer as a linear operator** on the whole input image (Sedghi, Gupta and Long 2019,
  "The singular values of convolutional layers"). With circular padding and stride 1 the
  operator is block-circulant; a 2-D FFT of the kernel turns it into one ``d x c`` matrix per
  spatial frequency, and the operator's singular values are the union of theirs
  (``c * n * n`` values for an ``n x n`` input instead of ``min(d, c*k*k)``). Its largest
  singular value is the layer's true Lipschitz constant (for circular padding), which the
  unfolded matrix's norm only approximates (it can be larger or smaller by up to a factor
  ``k``). Zero padding makes the operator Toeplitz rather than circulant; the circular
  spectrum is then a close approximation that becomes exact as ``n`` grows relative to ``k``.

Grouped convolutions are handled exactly: the unfolded matrix over all input channels is
block-diagonal (one block per group), so its SVD is the union of the blocks' SVDs, which is how
it is computed. Dilation does not change the unfolded matrix and is handled in the operator
spectrum by spreading the kernel. Strided convolutions are handled in the operator spectrum by
a polyphase decomposition (an extension beyond Sedghi et al., exact for circular padding when
the stride divides the input size). Transposed convolutions and other layer types are refused
with :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.blas import one_blas_thread
from deepprofile.capture.selectors import module_names, resolve_layers
from deepprofile.errors import DeepProfileError, ShapeError, UnknownLayerError

WEIGHT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class UnsupportedLayerError(DeepProfileError, TypeError):
    """A layer the spectral analysis cannot decompose (not a Conv1d/2d/3d or Linear)."""


def is_weight_layer(module: nn.Module) -> bool:
    """True for the layer types whose weights this module decomposes."""
    return isinstance(module, WEIGHT_LAYER_TYPES) and isinstance(
        getattr(module, "weight", None), torch.Tensor
    )


def _check_supported(module: nn.Module, name: str = "") -> None:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        raise UnsupportedLayerError(
            f"Layer {name!r} is a {type(module).__name__}; transposed convolutions are not "
            "supported by the spectral analysis (select Conv1d/Conv2d/Conv3d or Linear layers)."
        )
    if not is_weight_layer(module):
        raise UnsupportedLayerError(
            f"Layer {name!r} is a {type(module).__name__}, which has no convolution or linear "
            "weight to decompose; select Conv1d/Conv2d/Conv3d or Linear layers (or a block "
            "containing them)."
        )
    if isinstance(module, nn.Linear) and module.weight.ndim != 2:
        raise UnsupportedLayerError(f"Linear layer {name!r} has a weight of shape "
                                    f"{tuple(module.weight.shape)}; expected 2-D.")


def weight_layers(
    model: nn.Module, layers: str | Iterable[str] | None = None
) -> list[str]:
    """Module paths of the Conv/Linear layers selected by ``layers`` (all of them when None).

    Selectors are exact module paths or globs (as in :func:`deepprofile.capture.resolve_layers`).
    A selected container (a block, a ``Sequential``) stands for the weight layers inside it; a
    glob keeps the weight layers it matches. An exact path naming a layer without weights (a
    BatchNorm, a ReLU, a transposed convolution) raises :class:`UnsupportedLayerError`.
    """
    modules = dict(model.named_modules())
    names = module_names(model)
    if layers is None:
        chosen = [n for n in names if is_weight_layer(modules[n])]
        if not chosen:
            raise UnsupportedLayerError(
                f"{type(model).__name__} has no Conv1d/Conv2d/Conv3d or Linear layer to analyse."
            )
        return chosen
    if isinstance(layers, str):
        layers = [layers]
    picked: set[str] = set()
    for sel in layers:
        hits = resolve_layers(model, [sel])  # raises UnknownLayerError with close matches
        is_glob = any(ch in sel for ch in "*?[")
        for hit in hits:
            module = modules[hit]
            if is_weight_layer(module):
                picked.add(hit)
                continue
            inner = [n for n in names if n.startswith(hit + ".") and is_weight_layer(modules[n])]
            if inner and not isinstance(module, nn.modules.conv._ConvTransposeNd):
                picked.update(inner)
            elif not is_glob:
                _check_supported(module, hit)  # raises: not a weight layer, none inside
        if is_glob and not any(
            h in picked or any(p.startswith(h + ".") for p in picked) for h in hits
        ):
            raise UnsupportedLayerError(
                f"Pattern {sel!r} matches {len(hits)} module(s) but none is (or contains) a "
                "Conv1d/Conv2d/Conv3d or Linear layer."
            )
    return [n for n in names if n in picked]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at path ``name`` with an :class:`UnknownLayerError` listing close matches."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        resolve_layers(model, [name])  # raises with suggestions
        raise UnknownLayerError(f"Layer {name!r} not found.")  # pragma: no cover
    return modules[name]


# -- unfolded weight matrix ----------------------------------------------------------------------


def grouped_weight(module: nn.Module, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The unfolded weight as ``(groups, d/groups, c/groups * prod(kernel))`` (one block per group).

    A Linear layer is one group of shape ``(out_features, in_features)``.
    """
    _check_supported(module)
    weight = module.weight.detach().to("cpu", dtype)
    groups = int(getattr(module, "groups", 1))
    d = weight.shape[0]
    return weight.reshape(groups, d // groups, -1)


def weight_matrix(module: nn.Module, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The unfolded weight ``d x (c * prod(kernel))`` over all input channels.

    Columns follow :func:`torch.nn.functional.unfold`'s order (channel, then kernel offsets),
    so ``weight_matrix(conv) @ unfold(x)`` is the convolution's output minus bias. For a grouped
    convolution the matrix is block-diagonal: output channels of group ``g`` only see input
    channels of group ``g``.
    """
    blocks = grouped_weight(module, dtype)
    g, dg, cols = blocks.shape
    if g == 1:
        return blocks[0]
    full = torch.zeros(g * dg, g * cols, dtype=dtype)
    for i in range(g):
        full[i * dg:(i + 1) * dg, i * cols:(i + 1) * cols] = blocks[i]
    return full


def singular_values(module: nn.Module) -> np.ndarray:
    """Singular values of the unfolded weight matrix, descending, float64.

    Computed from the eigenvalues of the smaller Gram matrix (``W W^T`` or ``W^T W``) in float
    64 (:func:`gram_eigenvalues`); the squared singular values are exactly what the
    random-matrix analysis needs.
    """
    eig = gram_eigenvalues(grouped_weight(module).numpy())
    return np.sort(np.sqrt(eig))[::-1].copy()


def gram_eigenvalues(blocks: np.ndarray) -> np.ndarray:
    """Eigenvalues (clipped at 0, flattened over groups) of each block's smaller Gram matrix.

    Blocks are ``(groups, rows, cols)`` float64. numpy's LAPACK ``syevd`` on the Gram matrix is
    used: on this CPU it is 5-50x faster than an SVD of wide matrices (torch's and scipy's
    ``gesdd`` are slower still) and steadier than torch's ``eigvalsh`` under CPU contention.
    Relative accuracy of a squared singular value ``s^2`` is about ``1e-16 * s_max^2 / s^2``.
    Runs on one BLAS thread (:func:`one_blas_thread`): the same bits in any process.
    """
    rows, cols = blocks.shape[1:]
    tb = np.swapaxes(blocks, 1, 2)
    with one_blas_thread():
        gram = blocks @ tb if rows <= cols else tb @ blocks
        return np.clip(np.linalg.eigvalsh(gram), 0.0, None).reshape(-1)


@dataclass(frozen=True)
class LayerSVD:
    """``W = U diag(S) Vh`` of one layer's unfolded weight, with the layer's geometry.

    ``U`` is ``(d, r)``, ``Vh`` is ``(r, c * prod(kernel))``; both are ``None`` when only the
    singular values were computed. ``bias`` is the layer's bias (``None`` if it has none).
    """

    layer: str
    module_type: str
    weight_shape: tuple[int, ...]
    matrix_shape: tuple[int, int]
    groups: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Any
    dilation: tuple[int, ...]
    singular_values: np.ndarray
    U: np.ndarray | None = field(default=None, repr=False)
    Vh: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)

    @property
    def rank(self) -> int:
        return int(len(self.singular_values))

    @property
    def is_conv(self) -> bool:
        return self.module_type.startswith("Conv")

    @property
    def spectral_norm(self) -> float:
        return float(self.singular_values[0]) if self.rank else 0.0

    def matrix(self) -> np.ndarray:
        """``U diag(S) Vh`` (needs the vectors)."""
        if self.U is None or self.Vh is None:
            raise DeepProfileError(f"SVD of {self.layer!r} was computed without vectors.")
        return (self.U * self.singular_values) @ self.Vh

    def to_dict(self, include_vectors: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "layer": self.layer, "module_type": self.module_type,
            "weight_shape": list(self.weight_shape), "matrix_shape": list(self.matrix_shape),
            "groups": self.groups, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride), "padding": _plain(self.padding),
            "dilation": list(self.dilation), "singular_values": self.singular_values.tolist(),
        }
        if include_vectors:
            for key in ("U", "Vh", "bias"):
                value = getattr(self, key)
                data[key] = None if value is None else value.tolist()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSVD:
        def arr(key: str) -> np.ndarray | None:
            value = data.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        return cls(
            layer=data["layer"], module_type=data["module_type"],
            weight_shape=tuple(data["weight_shape"]), matrix_shape=tuple(data["matrix_shape"]),
            groups=int(data["groups"]), kernel_size=tuple(data["kernel_size"]),
            stride=tuple(data["stride"]), padding=_unplain(data["padding"]),
            dilation=tuple(data["dilation"]),
            singular_values=np.asarray(data["singular_values"], dtype=np.float64),
            U=arr("U"), Vh=arr("Vh"), bias=arr("bias"),
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _unplain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _geometry(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, nn.Linear):
        return {"kernel_size": (), "stride": (), "padding": (), "dilation": ()}
    return {
        "kernel_size": tuple(module.kernel_size), "stride": tuple(module.stride),
        "padding": module.padding if isinstance(module.padding, str) else tuple(module.padding),
        "dilation": tuple(module.dilation),
    }


def layer_svd(module: nn.Module, name: str = "", *, vectors: bool = True) -> LayerSVD:
    """SVD of one Conv/Linear module's unfolded weight (float64).

    With ``vectors=False`` only the singular values are computed (fast path, see
    :func:`singular_values`). With vectors, each group's block is decomposed with LAPACK
    (numpy's ``gesdd``, much faster than torch's on this CPU) and the group results are embedded
    in the block-diagonal layout of :func:`weight_matrix`, sorted by singular value.
    """
    _check_supported(module, name)
    blocks = grouped_weight(module)
    g, dg, cols = blocks.shape
    weight_shape = tuple(module.weight.shape)
    bias = getattr(module, "bias", None)
    bias_np = None if bias is None else bias.detach().to("cpu", torch.float64).numpy().copy()
    common = {
        "layer": name, "module_type": type(module).__name__, "weight_shape": weight_shape,
        "matrix_shape": (g * dg, g * cols), "groups": g, "bias": bias_np, **_geometry(module),
    }
    if not vectors:
        return LayerSVD(singular_values=singular_values(module), **common)
    u, s, vh = np.linalg.svd(blocks.numpy(), full_matrices=False)  # batched over groups
    if g == 1:
        return LayerSVD(singular_values=s[0], U=u[0], Vh=vh[0], **common)
    r = s.shape[1]
    U = np.zeros((g * dg, g * r))
    Vh = np.zeros((g * r, g * cols))
    for i in range(g):
        U[i * dg:(i + 1) * dg, i * r:(i + 1) * r] = u[i]
        Vh[i * r:(i + 1) * r, i * cols:(i + 1) * cols] = vh[i]
    order = np.argsort(-s.reshape(-1), kind="stable")
    return LayerSVD(
        singular_values=s.reshape(-1)[order], U=U[:, order], Vh=Vh[order], **common
    )


def model_svd(
    model: nn.Module, layers: str | Iterable[str] | None = None, *, vectors: bool = False
) -> dict[str, LayerSVD]:
    """:func:`layer_svd` of the selected Conv/Linear layers (all when ``layers`` is None)."""
    modules = dict(model.named_modules())
    return {
        name: layer_svd(modules[name], name, vectors=vectors)
        for name in weight_layers(model, layers)
    }


# -- the convolution as an operator on the whole input (Sedghi et al. 2019) ----------------------


def _as_tuple(value: int | Iterable[int], n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    out = tuple(int(v) for v in value)
    if len(out) != n:
        raise ShapeError(f"{what} needs {n} spatial sizes, got {out}.")
    return out


def conv_operator_singular_values(
    module: nn.Module, input_size: int | Iterable[int], *, top: int | None = None
) -> np.ndarray:
    """Exact singular values of a convolution with circular padding as an operator on inputs
    of spatial size ``input_size``, descending (Sedghi et al. 2019, FFT method).

    Returns ``min(d, c * prod(stride)) * prod(input_size / stride)`` values (the nonzero rank
    bound of the operator); ``top`` keeps the largest ones only. Stride must divide the input
    size. The layer's own padding is ignored (a shift does not change singular values); with
    zero padding the result is the spectrum of the circular-padded twin of the layer.
    """
    if isinstance(module, nn.Linear):
        return singular_values(module) if top is None else singular_values(module)[:top]
    _check_supported(module)
    weight = module.weight.detach().to("cpu", torch.float64)
    nd = weight.ndim - 2
    size = _as_tuple(input_size, nd, "input_size")
    stride = tuple(module.stride)
    dilation = tuple(module.dilation)
    for n, s in zip(size, stride, strict=True):
        if n % s:
            raise ShapeError(
                f"Input size {size} is not divisible by the stride {stride}; the circular "
                "operator spectrum needs stride | input size."
            )
    groups = int(module.groups)
    d, cg = weight.shape[:2]
    kernel = weight.shape[2:]
    # spread the kernel for dilation
    kd = tuple((k - 1) * dl + 1 for k, dl in zip(kernel, dilation, strict=True))
    spread = torch.zeros(d, cg, *kd, dtype=torch.float64)
    spread[(slice(None), slice(None), *(slice(None, None, dl) for dl in dilation))] = weight
    # polyphase: kernel offset a = s*q + u becomes channel (c, u) at offset q on the n/s grid
    qs = tuple(math.ceil(k / s) for k, s in zip(kd, stride, strict=True))
    pad = []
    for k, q, s in reversed(list(zip(kd, qs, stride, strict=True))):
        pad += [0, q * s - k]
    poly = torch.nn.functional.pad(spread, pad)
    shape = [d, cg]
    for q, s in zip(qs, stride, strict=True):
        shape += [q, s]
    poly = poly.reshape(shape)
    perm = [0, 1] + [2 + 2 * i + 1 for i in range(nd)] + [2 + 2 * i for i in range(nd)]
    poly = poly.permute(perm).reshape(d, cg * math.prod(stride), *qs)
    # fold offsets beyond the grid (kernel larger than the subsampled input) modulo the grid
    grid = tuple(n // s for n, s in zip(size, stride, strict=True))
    for axis, (q, m) in enumerate(zip(qs, grid, strict=True)):
        dim = 2 + axis
        reps = math.ceil(q / m)
        if reps * m != q:
            widths = [0, 0] * (poly.ndim - dim - 1) + [0, reps * m - q]
            poly = torch.nn.functional.pad(poly, widths)
        poly = poly.reshape(*poly.shape[:dim], reps, m, *poly.shape[dim + 1:]).sum(dim)
    spectrum = torch.fft.fftn(poly, dim=tuple(range(2, 2 + nd)))  # (d, c', *grid)
    spectrum = spectrum.permute(*range(2, 2 + nd), 0, 1).reshape(-1, d, poly.shape[1])
    # weight.shape[1] is already the per-group input count: the transfer matrix of group gi is
    # its output rows against all (group-local) input columns
    per_group_out = d // groups
    with one_blas_thread():  # the same bits in any process (see one_blas_thread)
        values = [
            np.linalg.svd(spectrum[:, gi * per_group_out:(gi + 1) * per_group_out].numpy(),
                          compute_uv=False).reshape(-1)
            for gi in range(groups)
        ]
    out = np.sort(np.concatenate(values))[::-1].copy()
    return out if top is None else out[:top]


def conv_operator_matrix(module: nn.Module, input_size: int | Iterable[int]) -> np.ndarray:
    """The explicit matrix of the circular-padded twin of ``module`` (small sizes only).

    Column ``j`` is the flattened output for the ``j``-th basis input; used to check
    :func:`conv_operator_singular_values` and available for experiments.
    """
    _check_supported(module)
    nd = module.weight.ndim - 2
    size = _as_tuple(input_size, nd, "input_size")
    c = module.in_channels
    n_in = c * math.prod(size)
    if n_in > 20_000:
        raise ShapeError(f"Explicit operator matrix of {n_in} columns is too large; use "
                         "conv_operator_singular_values.")
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, c, *size)
    weight = module.weight.detach().to("cpu", torch.float64)
    pads: list[int] = []
    for k, dl in zip(reversed(module.kernel_size), reversed(module.dilation), strict=True):
        total = (k - 1) * dl
        pads += [total // 2, total - total // 2]
    x = torch.nn.functional.pad(basis, pads, mode="circular")
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[nd]
    out = conv(x, weight, None, module.stride, 0, module.dilation, module.groups)
    return out.reshape(n_in, -1).T.numpy()
