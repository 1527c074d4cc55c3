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


def margin_features(gc: object, projector: AbstractProjector, batch: tuple[Tensor, Tensor],
                    model_id: int, n_params: int) -> tuple[Tensor, Tensor]:
    """Projected per-sample margin gradients divided by ``sqrt(n_params)`` (traker's
    ``normalize_factor``) and the out-to-loss terms ``Q`` of one batch.

    ``gc`` is a traker ``FunctionalGradientComputer`` (its model, weights and buffers are
    used; only the weights it holds are differentiated).
    """
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
                     progress: Callable[[int], None] | None = None) -> None:
    """Compute, write and flag the chunks ``chunk_ids`` of ``feats`` (batches start at
    each chunk's first row, so a chunk's rows never depend on which other chunks ran)."""
    for chunk_id in chunk_ids:
        start, stop = feats.chunk_bounds(chunk_id)
        rows, qs = [], []
        for batch in batches(train_set, start, stop, batch_size, device):
            g, q = margin_features(gc, projector, batch, model_id, n_params)
            rows.append(g.cpu())
            qs.append(q.reshape(-1).cpu())
        feats.write_chunk(chunk_id, torch.cat(rows).numpy(), torch.cat(qs).numpy())
        kill_point("trak-chunk-committed")
        if progress:
            progress(stop - start)
