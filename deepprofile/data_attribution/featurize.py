"""TRAK featurisation of training-set chunks: the loop shared by one process and Dask tasks.

For each chunk of the :class:`~deepprofile.data_attribution.store.FeatureArray` it
computes, batch by batch, the projected, normalised per-sample gradients of the margin
(traker's ``FunctionalGradientComputer`` + projector, as ``TRAKer.featurize`` does) and
traker's out-to-loss term ``Q = 1 - p(true class)``, writes the chunk's rows and sets its
completion flag. Nothing else is kept between chunks, so any subset of chunks can be
computed anywhere (one process, or one Dask task per chunk range) with the same result.

One difference from ``TRAKer.featurize``, for speed: ``Q`` is taken from the logits of the
per-sample forward pass that the gradient needs anyway (``torch.func.grad`` with an
auxiliary output) instead of a second forward pass over the batch, which cost about a
sixth of the featurisation time. The two differ by float rounding only (same formula,
per-sample rather than batched matmuls; |dQ| below 1e-6 in ``tests/data_attribution``).

A memory budget caps the samples of one per-sample-gradient pass
(:func:`samples_per_pass`). The kill point ``trak-chunk-committed``
(:mod:`deepprofile.testhooks`) follows each committed chunk, for the resume tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from trak.projectors import AbstractProjector
from trak.utils import vectorize

from deepprofile.data_attribution.store import FeatureArray
from deepprofile.testhooks import kill_point


def batches(dataset: Dataset, start: int, stop: int, batch_size: int,
            device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images, labels)`` batches of ``dataset[start:stop]`` on ``device``."""
    loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size)
    for x, y in loader:
        yield x.to(device), torch.as_tensor(y).long().to(device)


def _margin_and_q(model: nn.Module, weights: dict[str, Tensor], buffers: dict[str, Tensor],
                  image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """traker's ``ImageClassificationModelOutput.get_output`` (the margin), with its
    out-to-loss term ``1 - softmax(logits)[label]`` from the same logits as auxiliary output."""
    logits = torch.func.functional_call(model, (weights, buffers), image.unsqueeze(0))
    bindex = torch.arange(logits.shape[0], device=logits.device)
    correct = logits[bindex, label.unsqueeze(0)]
    others = logits.clone()
    others[bindex, label.unsqueeze(0)] = torch.tensor(-torch.inf, device=logits.device,
                                                      dtype=logits.dtype)
    margin = (correct - others.logsumexp(dim=-1)).sum()
    q = 1 - torch.softmax(logits.detach(), dim=-1)[bindex, label.unsqueeze(0)].sum()
    return margin, q


#: float32 copies of the differentiated parameters one sample holds in the per-sample
#: gradient pass (vmap's gradient dict, traker's vectorised copy, temporaries); measured
#: 2.2-2.4 on resnet18 at 32 and 128 px (docs/data_attribution.md), rounded up.
GRAD_COPIES = 3.0


def samples_per_pass(model: nn.Module, example: Tensor, n_params: int,
                     projector: AbstractProjector, budget: int | None) -> int | None:
    """Samples one per-sample-gradient pass may hold under ``budget`` bytes (``None``:
    unbounded): ``GRAD_COPIES x 4 x n_params`` plus the activations of a forward-backward
    (:func:`deepprofile.attribution.memory.per_sample_bytes`) per sample, after the
    projector's matrix block."""
    if budget is None:
        return None
    from deepprofile.attribution.memory import BACKWARD_FACTOR, per_sample_bytes

    matrix = getattr(projector, "proj_matrix", None)
    fixed = matrix.numel() * matrix.element_size() if isinstance(matrix, Tensor) else 0
    per = int(GRAD_COPIES * 4 * n_params) + per_sample_bytes(model, example, BACKWARD_FACTOR)
    return max(1, (budget - fixed) // per)


def margin_features(gc: object, projector: AbstractProjector, batch: tuple[Tensor, Tensor],
                    model_id: int, n_params: int,
                    max_samples: int | None = None) -> tuple[Tensor, Tensor]:
    """Projected per-sample margin gradients divided by ``sqrt(n_params)`` (traker's
    ``normalize_factor``) and the out-to-loss terms ``Q`` of one batch, in passes of at
    most ``max_samples`` samples (the memory bound; ``None``: the whole batch at once).

    ``gc`` is a traker ``FunctionalGradientComputer`` (its model, weights and buffers are
    used; only the weights it holds are differentiated).
    """
    if max_samples is not None and len(batch[0]) > max_samples:
        parts = [margin_features(gc, projector, (batch[0][i:i + max_samples],
                                                 batch[1][i:i + max_samples]),
                                 model_id, n_params)
                 for i in range(0, len(batch[0]), max_samples)]
        return torch.cat([g for g, _ in parts]), torch.cat([q for _, q in parts])
    grad_fn = torch.func.grad(_margin_and_q, argnums=1, has_aux=True)
    grads, q = torch.func.vmap(grad_fn, in_dims=(None, None, None, 0, 0),
                               randomness="different")(
        gc.model, gc.func_weights, gc.func_buffers, *batch)  # type: ignore[attr-defined]
    flat = vectorize(grads, device=batch[0].device)
    out = projector.project(flat, model_id=model_id)
    return out / torch.sqrt(torch.tensor(float(n_params))), q.detach()


def featurize_chunks(gc: object, projector: AbstractProjector, train_set: Dataset,
                     feats: FeatureArray, chunk_ids: Sequence[int], *, model_id: int,
                     n_params: int, batch_size: int, device: torch.device,
                     progress: Callable[[int], None] | None = None,
                     budget: int | None = None) -> None:
    """Compute, write and flag the chunks ``chunk_ids`` of ``feats`` (batches start at
    each chunk's first row, so a chunk's rows never depend on which other chunks ran).

    ``budget`` (bytes, ``None``: unbounded) caps the samples of one per-sample-gradient
    pass (:func:`samples_per_pass`); batches above the cap run in several passes.
    """
    cap: int | None = None
    for chunk_id in chunk_ids:
        start, stop = feats.chunk_bounds(chunk_id)
        rows, qs = [], []
        for batch in batches(train_set, start, stop, batch_size, device):
            if cap is None and budget is not None:
                cap = samples_per_pass(gc.model, batch[0][:1], n_params,  # type: ignore[attr-defined]
                                       projector, budget)
            g, q = margin_features(gc, projector, batch, model_id, n_params, cap)
            rows.append(g.cpu())
            qs.append(q.reshape(-1).cpu())
        feats.write_chunk(chunk_id, torch.cat(rows).numpy(), torch.cat(qs).numpy())
        kill_point("trak-chunk-committed")
        if progress:
            progress(stop - start)
