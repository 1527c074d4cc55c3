"""Projections of a layer's output on its left singular vectors; influential singular vectors.

For a Conv/Linear layer with unfolded weight ``W = U S V^T`` (:mod:`.conv_svd`) and bias ``b``,
the output at spatial position ``p`` is ``out_p = W patch_p + b``, hence

    U^T (out_p - b) = S V^T patch_p            (Praggastis et al. 2022, eq. 2)

The coefficient ``a[j, p] = u_j . (out_p - b)`` says how much of the output at ``p`` lies along
the ``j``-th singular direction. Per image the *energy* along ``u_j`` is ``sum_p a[j, p]^2``,
and its *share* is that energy over the total ``sum_p ||out_p - b||^2`` (shares over all ``j``
sum to 1: ``U`` spans the output space reached by the layer). Influential singular vectors of
an image are chosen from its shares by a threshold rule:

* ``"cumulative"`` (default, threshold 0.8): the fewest vectors whose shares add up to at
  least ``threshold`` of the image's energy (largest shares first);
* ``"share"``: every vector whose share is at least ``threshold``.

Per class the rule is applied to the class's mean share profile; the fraction of the class's
images for which each vector is influential is kept too. Everything is batched: a batch of
images is one matrix product, never a loop over images (the reference implementation in
pnnl/DeepDataProfiler runs one image at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepprofile.capture.hooks import first_tensor
from deepprofile.errors import EmptyDatasetError, ShapeError
from deepprofile.spectral.conv_svd import (
    LayerSVD,
    UnsupportedLayerError,
    get_module,
    layer_svd,
    weight_layers,
)

MODES = ("cumulative", "share")


# -- the identity, batched ----------------------------------------------------------------------


def _as_tensor(x: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to("cpu", dtype)


def _basis(svd: LayerSVD, n_vectors: int | None, dtype: torch.dtype) -> torch.Tensor:
    if svd.U is None:
        raise ShapeError(f"SVD of {svd.layer!r} has no vectors; compute it with vectors=True.")
    k = svd.rank if n_vectors is None else min(int(n_vectors), svd.rank)
    return torch.from_numpy(np.ascontiguousarray(svd.U[:, :k])).to(dtype)


def project_output(
    svd: LayerSVD, output: torch.Tensor | np.ndarray, n_vectors: int | None = None
) -> torch.Tensor:
    """``U^T (out - bias)`` per spatial position: ``(N, k, P)`` for outputs ``(N, d, ...)``.

    ``k`` is ``n_vectors`` (the top singular vectors) or the rank; ``P`` the number of spatial
    positions (1 for a Linear layer). Computed in the output's float precision (float64 for
    numpy input).
    """
    out = output if isinstance(output, torch.Tensor) else torch.from_numpy(np.asarray(output))
    out = out.detach()
    dtype = out.dtype if out.is_floating_point() else torch.float64
    out = out.to(dtype)
    d = svd.matrix_shape[0]
    if out.ndim < 2 or out.shape[1] != d:
        raise ShapeError(
            f"Output of shape {tuple(out.shape)} does not fit layer {svd.layer!r} with {d} "
            "output channels; expected (N, C, ...) with C = out channels."
        )
    flat = out.reshape(out.shape[0], d, -1)
    if svd.bias is not None:
        flat = flat - torch.from_numpy(svd.bias).to(flat.device, dtype).view(1, d, 1)
    basis = _basis(svd, n_vectors, dtype).to(flat.device)
    return basis.T.contiguous() @ flat  # (k, d) @ (N, d, P) -> (N, k, P)


def unfold_inputs(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Input patches ``(N, c * prod(kernel), P)`` in the column order of the unfolded weight.

    Applies the layer's own padding (zeros, reflect, replicate or circular) so that
    ``weight_matrix(module) @ patches`` equals the layer's output minus bias. Conv1d and Conv2d
    are supported (``F.unfold`` is 2-D); a Linear layer's patch is its input.
    """
    x = inputs.detach()
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, 1)
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
        raise UnsupportedLayerError(
            f"Projections from inputs support Conv1d/Conv2d/Linear, not {type(module).__name__}; "
            "project the layer's output instead (project_output)."
        )
    one_d = isinstance(module, nn.Conv1d)
    if one_d:
        x = x.unsqueeze(2)
    pads = module._reversed_padding_repeated_twice
    if one_d:
        pads = list(pads) + [0, 0]
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, tuple(pads), mode=mode)

    def two(v: tuple[int, ...]) -> tuple[int, int]:
        return (1, v[0]) if one_d else (v[0], v[1])

    return F.unfold(x, two(module.kernel_size), dilation=two(module.dilation),
                    stride=two(module.stride))


def project_inputs(
    svd: LayerSVD, module: nn.Module, inputs: torch.Tensor | np.ndarray,
    n_vectors: int | None = None,
) -> torch.Tensor:
    """``S V^T patches`` per spatial position, ``(N, k, P)``: equals :func:`project_output`."""
    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.asarray(inputs))
    dtype = x.dtype if x.is_floating_point() else torch.float64
    patches = unfold_inputs(module, x.to(dtype))
    if svd.Vh is None:
        raise ShapeError(f"SVD of {svd.layer!r} has no vectors; compute it with vectors=True.")
    k = svd.rank if n_vectors is None else min(int(n_vectors), svd.rank)
    sv = torch.from_numpy(svd.singular_values[:k, None] * svd.Vh[:k]).to(dtype)
    return sv @ patches  # (k, c k k) @ (N, c k k, P) -> (N, k, P)


def energy_shares(coeffs: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """Share of each image's energy along each singular vector, ``(N, k)`` float64.

    ``total`` is each image's ``||out - bias||^2`` (defaults to the sum over the given
    vectors, which is the same when all of them are given).
    """
    energy = coeffs.pow(2).sum(dim=2, dtype=torch.float64)
    denom = energy.sum(dim=1) if total is None else total.double()
    return energy / denom.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)


def influential_mask(shares: np.ndarray, threshold: float = 0.8,
                     mode: str = "cumulative") -> np.ndarray:
    """Boolean ``(N, k)``: which singular vectors are influential for each row of shares."""
    s = np.atleast_2d(np.asarray(shares, dtype=np.float64))
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    if mode == "share":
        return s >= threshold
    order = np.argsort(-s, axis=1, kind="stable")
    ranked = np.take_along_axis(s, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked  # energy covered before this vector
    keep_ranked = before < threshold - 1e-12  # keep until the threshold is reached
    mask = np.zeros_like(keep_ranked)
    np.put_along_axis(mask, order, keep_ranked, axis=1)
    return mask


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerProjection:
    """Per-image and per-class projections of one layer's output on its top singular vectors.

    ``class_mean_share[c][j]``: mean share of class ``c``'s energy along ``u_j``;
    ``class_frequency[c][j]``: fraction of class ``c``'s images for which ``u_j`` is
    influential; ``class_influential[name]``: the vectors influential for the class (the
    threshold rule on its mean profile); ``image_influential[i]``: per image.
    """

    layer: str
    n_vectors: int
    rank: int
    threshold: float
    mode: str
    singular_values: np.ndarray
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]
    class_mean_share: np.ndarray
    class_frequency: np.ndarray
    class_influential: dict[str, list[int]]
    mean_share: np.ndarray
    captured_energy: float
    image_indices: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    image_influential: tuple[tuple[int, ...], ...] = field(repr=False, default=())
    source: str = "output"

    @property
    def n_images(self) -> int:
        return int(len(self.labels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "n_vectors": self.n_vectors, "rank": self.rank,
            "threshold": self.threshold, "mode": self.mode, "source": self.source,
            "singular_values": self.singular_values.tolist(),
            "class_ids": list(self.class_ids), "class_names": list(self.class_names),
            "class_counts": list(self.class_counts),
            "class_mean_share": self.class_mean_share.tolist(),
            "class_frequency": self.class_frequency.tolist(),
            "class_influential": {k: list(v) for k, v in self.class_influential.items()},
            "mean_share": self.mean_share.tolist(), "captured_energy": self.captured_energy,
            "n_images": self.n_images, "image_indices": self.image_indices.tolist(),
            "labels": self.labels.tolist(),
            "image_influential": [list(v) for v in self.image_influential],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerProjection:
        return cls(
            layer=data["layer"], n_vectors=int(data["n_vectors"]), rank=int(data["rank"]),
            threshold=float(data["threshold"]), mode=data["mode"],
            singular_values=np.asarray(data["singular_values"], dtype=np.float64),
            class_ids=tuple(data["class_ids"]), class_names=tuple(data["class_names"]),
            class_counts=tuple(data["class_counts"]),
            class_mean_share=np.asarray(data["class_mean_share"], dtype=np.float64),
            class_frequency=np.asarray(data["class_frequency"], dtype=np.float64),
            class_influential={k: [int(i) for i in v]
                               for k, v in data["class_influential"].items()},
            mean_share=np.asarray(data["mean_share"], dtype=np.float64),
            captured_energy=float(data["captured_energy"]),
            image_indices=np.asarray(data["image_indices"], dtype=np.int64),
            labels=np.asarray(data["labels"], dtype=np.int64),
            image_influential=tuple(tuple(int(i) for i in v)
                                    for v in data.get("image_influential", [])),
            source=data.get("source", "output"),
        )


class ProjectionAccumulator:
    """Collect energy shares batch by batch (no activation map is kept) and summarise them.

    Memory is ``N x k`` float64 shares (k = ``n_vectors``), not the maps: 1,000 images of a
    64-channel layer take 0.5 MB.
    """

    def __init__(self, svd: LayerSVD, *, n_vectors: int | None = None, threshold: float = 0.8,
                 mode: str = "cumulative", source: str = "output") -> None:
        influential_mask(np.ones((1, 1)), threshold, mode)  # validate early
        self.svd = svd
        self.n_vectors = svd.rank if n_vectors is None else min(int(n_vectors), svd.rank)
        self.threshold = threshold
        self.mode = mode
        self.source = source
        self._shares: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []

    def add_shares(self, shares: np.ndarray, labels: Iterable[int],
                   indices: Iterable[int]) -> None:
        self._shares.append(np.asarray(shares, dtype=np.float64))
        self._labels.append(np.asarray(list(labels), dtype=np.int64))
        self._indices.append(np.asarray(list(indices), dtype=np.int64))

    def _rows(self, n: int, per_row: int) -> int:
        """Rows per chunk so that the projection temporaries stay within a quarter of the
        memory budget (the forward pass holds the rest); all rows when unbounded."""
        from deepprofile.attribution.memory import current_budget

        budget = current_budget()
        if budget is None:
            return max(n, 1)
        return max(1, min(n, (budget // 4) // max(per_row, 1)))

    def add_output(self, output: torch.Tensor, labels: Iterable[int],
                   indices: Iterable[int]) -> None:
        """Add one batch of the layer's outputs ``(N, d, ...)`` (in budget-sized chunks)."""
        labels, indices = np.asarray(list(labels)), np.asarray(list(indices))
        n = len(output)
        # float64 worst case: the centred copy, its square and the coefficients
        positions = int(np.prod(output.shape[2:])) if output.ndim > 2 else 1
        per_row = 8 * positions * (2 * output.shape[1] + self.n_vectors)
        step = self._rows(n, per_row)
        for start in range(0, n, step):
            sl = slice(start, start + step)
            self._add_output(output[sl], labels[sl], indices[sl])

    def _add_output(self, output: torch.Tensor, labels: Iterable[int],
                    indices: Iterable[int]) -> None:
        out = output.detach()
        if not out.is_floating_point() or out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        coeffs = project_output(self.svd, out, self.n_vectors)
        flat = out.reshape(out.shape[0], out.shape[1], -1)
        if self.svd.bias is not None:
            flat = flat - torch.from_numpy(self.svd.bias).to(flat.device, flat.dtype).view(
                1, -1, 1)
        total = flat.pow(2).sum(dim=(1, 2), dtype=torch.float64)
        self.add_shares(energy_shares(coeffs, total).cpu().numpy(), labels, indices)

    def add_inputs(self, module: nn.Module, inputs: torch.Tensor, labels: Iterable[int],
                   indices: Iterable[int]) -> None:
        """Add one batch of the layer's inputs (projections ``S V^T patches``), in
        budget-sized chunks: the unfolded patches are ``kernel size`` times the input."""
        labels, indices = np.asarray(list(labels)), np.asarray(list(indices))
        n = len(inputs)
        if n == 0:
            return
        probe = unfold_inputs(module, inputs[:1].detach().float())
        per_row = 8 * probe.shape[2] * (probe.shape[1] + 2 * self.svd.rank)
        step = self._rows(n, per_row)
        for start in range(0, n, step):
            sl = slice(start, start + step)
            self._add_inputs(module, inputs[sl], labels[sl], indices[sl])

    def _add_inputs(self, module: nn.Module, inputs: torch.Tensor, labels: Iterable[int],
                    indices: Iterable[int]) -> None:
        x = inputs.detach()
        if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        full = project_inputs(self.svd, module, x)  # all vectors: their energy is the total
        total = full.pow(2).sum(dim=(1, 2), dtype=torch.float64)
        self.add_shares(energy_shares(full[:, :self.n_vectors], total).cpu().numpy(),
                        labels, indices)

    def result(self, class_names: Sequence[str] | None = None) -> LayerProjection:
        if not self._shares:
            raise EmptyDatasetError(
                f"No images were projected for layer {self.svd.layer!r}; the dataset is empty."
            )
        shares = np.concatenate(self._shares)
        labels = np.concatenate(self._labels)
        indices = np.concatenate(self._indices)
        return summarize_shares(
            self.svd, shares, labels, indices, threshold=self.threshold, mode=self.mode,
            class_names=class_names, source=self.source,
        )


def summarize_shares(
    svd: LayerSVD,
    shares: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray | None = None,
    *,
    threshold: float = 0.8,
    mode: str = "cumulative",
    class_names: Sequence[str] | None = None,
    source: str = "output",
) -> LayerProjection:
    """Per-class aggregation and influential vectors from per-image shares ``(N, k)``."""
    shares = np.asarray(shares, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(shares) == 0:
        raise EmptyDatasetError(f"No images to summarise for layer {svd.layer!r}.")
    if indices is None:
        indices = np.arange(len(labels))
    image_mask = influential_mask(shares, threshold, mode)
    class_ids = np.unique(labels)

    def cname(c: int) -> str:
        if class_names is not None and 0 <= c < len(class_names):
            return str(class_names[c])
        return str(c)

    names = tuple(cname(int(c)) for c in class_ids)
    if len(set(names)) != len(names):
        names = tuple(f"{cname(int(c))} ({int(c)})" for c in class_ids)
    means = np.stack([shares[labels == c].mean(axis=0) for c in class_ids])
    freq = np.stack([image_mask[labels == c].mean(axis=0) for c in class_ids])
    class_mask = influential_mask(means, threshold, mode)
    return LayerProjection(
        layer=svd.layer, n_vectors=int(shares.shape[1]), rank=svd.rank,
        threshold=float(threshold), mode=mode,
        singular_values=np.asarray(svd.singular_values[: shares.shape[1]]),
        class_ids=tuple(int(c) for c in class_ids), class_names=names,
        class_counts=tuple(int((labels == c).sum()) for c in class_ids),
        class_mean_share=means, class_frequency=freq,
        class_influential={n: np.flatnonzero(m).tolist()
                           for n, m in zip(names, class_mask, strict=True)},
        mean_share=shares.mean(axis=0), captured_energy=float(shares.sum(axis=1).mean()),
        image_indices=np.asarray(indices, dtype=np.int64), labels=labels,
        image_influential=tuple(tuple(np.flatnonzero(m).tolist()) for m in image_mask),
        source=source,
    )


def project_captured(
    svd: LayerSVD,
    module: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    labels: Iterable[int],
    indices: Iterable[int] | None = None,
    *,
    n_vectors: int | None = None,
    threshold: float = 0.8,
    mode: str = "cumulative",
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
) -> LayerProjection:
    """Projections from captured *inputs* of a layer (``ActivationRecorder(...,
    capture_inputs=True)`` with the ``flatten`` reduction), processed in batches."""
    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.asarray(inputs))
    labels = np.asarray(list(labels), dtype=np.int64)
    idx = np.arange(len(labels)) if indices is None else np.asarray(list(indices))
    if len(x) != len(labels):
        raise ShapeError(f"{len(x)} inputs but {len(labels)} labels for layer {svd.layer!r}.")
    acc = ProjectionAccumulator(svd, n_vectors=n_vectors, threshold=threshold, mode=mode,
                                source="inputs")
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        acc.add_inputs(module, x[sl], labels[sl], idx[sl])
    return acc.result(class_names)


def project_stored_outputs(
    svd: LayerSVD,
    outputs: np.ndarray,
    labels: Iterable[int],
    indices: Iterable[int] | None = None,
    *,
    n_vectors: int | None = None,
    threshold: float = 0.8,
    mode: str = "cumulative",
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
) -> LayerProjection:
    """Projections from stored full output maps ``(N, d, ...)`` (a ``flatten`` store layer)."""
    labels = np.asarray(list(labels), dtype=np.int64)
    idx = np.arange(len(labels)) if indices is None else np.asarray(list(indices))
    acc = ProjectionAccumulator(svd, n_vectors=n_vectors, threshold=threshold, mode=mode)
    for start in range(0, len(labels), batch_size):
        sl = slice(start, start + batch_size)
        acc.add_output(torch.from_numpy(np.asarray(outputs[sl])), labels[sl], idx[sl])
    return acc.result(class_names)


def project_dataset(
    model: nn.Module,
    data: Dataset | DataLoader,
    layers: str | Iterable[str],
    *,
    svds: Mapping[str, LayerSVD] | None = None,
    n_vectors: int | None = None,
    threshold: float = 0.8,
    mode: str = "cumulative",
    source: str = "output",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    quiet: bool = False,
) -> dict[str, LayerProjection]:
    """Run ``model`` over a dataset with forward hooks on the chosen layers and project.

    Batch by batch, each hooked layer's output minus bias (``source="output"``) or its unfolded
    input (``source="inputs"``, the ``S V^T patches`` side of the identity) is projected on the
    layer's singular vectors and reduced to per-image energy shares at once; no activation map
    outlives its batch. ``data`` is a Dataset returning ``(image, label)`` or a DataLoader
    yielding ``(images, labels)`` batches. Hooks are removed and the model's train/eval mode
    is restored in ``finally``. ``input_shapes``, when a dict, receives each layer's input shape
    (per sample), which the operator spectrum needs.
    """
    if source not in ("output", "inputs"):
        raise ValueError(f"source must be 'output' or 'inputs', got {source!r}.")
    names = weight_layers(model, layers)
    modules = {name: get_module(model, name) for name in names}
    svds = dict(svds or {})
    for name in names:
        if name not in svds or svds[name].U is None:
            svds[name] = layer_svd(modules[name], name, vectors=True)
    accs = {
        name: ProjectionAccumulator(svds[name], n_vectors=n_vectors, threshold=threshold,
                                    mode=mode, source=source)
        for name in names
    }
    if (not isinstance(data, DataLoader) and len(data) > 0
            and isinstance(data[0], (tuple, list))):
        # the forward pass's batch under the memory budget (probe on the first image)
        from deepprofile.attribution.memory import FORWARD_FACTOR, bounded_batch

        first = torch.as_tensor(data[0][0]).unsqueeze(0).to(device)
        was = model.training
        try:
            model.eval()
            batch_size = bounded_batch(model, first, batch_size, factor=FORWARD_FACTOR)
        finally:
            model.train(was)
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False)
    if class_names is None:
        from deepprofile.data import class_names as names_of

        class_names = names_of(loader.dataset)
    current: dict[str, Any] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            x = first_tensor(args, name)
            if input_shapes is not None:
                input_shapes[name] = tuple(x.shape[1:])
            if source == "output":
                accs[name].add_output(first_tensor(output, name), current["labels"],
                                      current["indices"])
            else:
                accs[name].add_inputs(module, x, current["labels"], current["indices"])

        return hook

    from deepprofile.progress import progress_iter

    was_training = model.training
    handles = []
    seen = 0
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        model.eval()
        total = len(loader) if hasattr(loader, "__len__") else None
        with torch.no_grad():
            for batch in progress_iter(loader, "projections", quiet=quiet, total=total):
                if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                    raise ShapeError("The dataset must yield (image, label) pairs.")
                images, labels = batch[0], batch[1]
                labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).reshape(-1)
                current["labels"] = labels
                current["indices"] = np.arange(seen, seen + len(labels))
                model(images.to(device))
                seen += len(labels)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise EmptyDatasetError("The dataset is empty; there is nothing to project.")
    return {name: accs[name].result(class_names) for name in names}
