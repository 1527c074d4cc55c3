"""Capture a dataset's activations into an :class:`ActivationStore`, resumably.

Rows are processed chunk by chunk (a chunk is a whole number of batches); each
finished chunk is committed to the store before the next starts. Running the
same capture again after a crash skips the committed chunks and yields arrays
identical to an uninterrupted run: batches are aligned to chunk boundaries and
position sampling depends only on (seed, sample index).

Layer shapes come from the first batch: the store is created once that batch's
reduced outputs are known (an existing store is reopened without any forward pass),
and the weights hash is computed on a helper thread meanwhile, so a capture costs no
extra forward pass and little fixed time.

Before trusting an existing store, a capture verifies it: a finished store is
read back chunk by chunk against its digests (and its layout against its
metadata), an unfinished one has its committed chunks checked, so a damaged
store raises :class:`~deepprofile.errors.CorruptStoreError` instead of
producing results from fill values. One capture at a time writes a store: a
lock file beside it (``.<store>.lock``, with the owner's pid) makes a second
concurrent capture fail with :class:`~deepprofile.errors.RunLockedError`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from deepprofile.capture.fingerprint import content_fingerprint
from deepprofile.capture.hooks import (
    ActivationRecorder,
    BatchCapture,
    first_tensor,
    register_forward_hooks,
    remove_hooks,
)
from deepprofile.capture.reducers import Reduction, parse_reduction, reduce
from deepprofile.capture.selectors import resolve_layers
from deepprofile.capture.store import ActivationStore
from deepprofile.capture.writer import ChunkWriter
from deepprofile.errors import EmptyDatasetError, ShapeError
from deepprofile.locking import file_lock
from deepprofile.provenance import now_iso, package_versions, weights_hash


def store_lock(path: str | Path):
    """Context manager: the exclusive lock of the store at ``path`` (fails if held)."""
    path = Path(path)
    return file_lock(path.parent / f".{path.name}.lock", what=f"The activation store {path}")


@dataclass(frozen=True)
class _Plan:
    """What a capture records, before anything runs: layers, reductions, rows, chunking."""

    layers: list[str]
    reductions: dict[str, Reduction]
    rows: np.ndarray
    chunk_size: int
    seed: int
    model_name: str
    model_info: dict[str, Any]

    @property
    def reduction_names(self) -> dict[str, str]:
        return {n: str(r) for n, r in self.reductions.items()}


def _plan(model: nn.Module, dataset: Dataset, layers: str | Iterable[str], *,
          reductions: str | Reduction | Mapping[str, str | Reduction], batch_size: int,
          chunk_size: int | None, indices: Sequence[int] | None, seed: int,
          model_name: str | None, model_info: Mapping[str, Any] | None) -> _Plan:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices is None:
        rows = np.arange(len(dataset))  # type: ignore[arg-type]
    else:
        rows = np.asarray(list(indices), dtype=np.int64)
    if len(rows) == 0:
        raise EmptyDatasetError(
            "The dataset (or the selected indices) holds no samples; nothing to capture."
        )
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_meta]
    if meta:
        raise ShapeError(
            f"The model's weights are on the meta device (no values; first: {meta[0]!r}), so "
            "there is nothing to capture. Load real weights first (e.g. "
            "model.to_empty(device='cpu') then load_state_dict).")
    layer_names = resolve_layers(model, layers)
    if isinstance(reductions, Mapping):
        reds = {name: parse_reduction(reductions[name]) for name in layer_names}
    else:
        reds = {name: parse_reduction(reductions) for name in layer_names}
    chunk = chunk_size or max(batch_size, 256)
    chunk = max(batch_size, (chunk // batch_size) * batch_size)
    info = dict(model_info or {})
    return _Plan(layer_names, reds, rows, chunk, seed,
                 model_name or info.get("arch") or type(model).__name__, info)


def _identity(model: nn.Module, dataset: Dataset, rows: np.ndarray) -> tuple[str, str | None]:
    """The weights hash and the dataset's content fingerprint (the costly config entries)."""
    return weights_hash(model), content_fingerprint(dataset, rows)


def _config(plan: _Plan, dataset: Dataset, identity: tuple[str, str | None]) -> dict[str, Any]:
    """The configuration a store is matched on when a capture resumes."""
    from deepprofile.data import dataset_spec

    rows = plan.rows
    config = {
        "model": plan.model_name,
        "weights_hash": identity[0],
        "layers": plan.layers,
        "reductions": plan.reduction_names,
        "dataset": dataset_spec(dataset),
        "indices_crc": int(np.bitwise_xor.reduce(rows * 2654435761 % 2**32)) if len(rows) else 0,
        "seed": plan.seed,
    }
    if identity[1] is not None:
        config["content_fingerprint"] = identity[1]
    return config


def _create(path: Path, plan: _Plan, dataset: Dataset, config: dict[str, Any],
            output_shapes: Mapping[str, tuple[int, ...]], num_classes: int, batch_size: int,
            overwrite: bool) -> ActivationStore:
    """Create the store once the layers' output shapes and the class count are known."""
    from deepprofile.data import class_names

    stored = {n: plan.reductions[n].output_shape(tuple(output_shapes[n])) for n in plan.layers}
    metadata = {
        "model": config["model"], "model_info": plan.model_info,
        "weights_hash": config["weights_hash"], "dataset": config["dataset"],
        "class_names": class_names(dataset) or [str(i) for i in range(num_classes)],
        "seed": plan.seed, "versions": package_versions(), "created": now_iso(),
        "batch_size": batch_size,
    }
    return ActivationStore.create(
        path, config=config, layer_shapes=stored, reductions=plan.reduction_names,
        output_shapes={n: tuple(output_shapes[n]) for n in plan.layers},
        n_samples=len(plan.rows), num_classes=num_classes, chunk_size=plan.chunk_size,
        metadata=metadata, overwrite=overwrite,
    )


def _reopen(path: Path, plan: _Plan, config: dict[str, Any]) -> ActivationStore:
    """Reopen an existing store to resume it: same configuration, verified before trusted."""
    store = ActivationStore.open_matching(
        path, {**config, "n_samples": len(plan.rows), "chunk_size": plan.chunk_size})
    store.check_provenance()
    if store.is_complete:
        store.verify_all()
    else:
        store.verify_all(np.flatnonzero(store.done_chunks()))
    return store


def _num_classes(cap: BatchCapture) -> int:
    if cap.logits is None or cap.logits.ndim != 2:
        raise ShapeError("The model must return logits of shape (N, num_classes).")
    return int(cap.logits.shape[1])


def _probe(model: nn.Module, dataset: Dataset, layers: list[str],
           reductions: dict[str, Reduction], device: torch.device) -> tuple[dict, int]:
    """Output shape per layer and number of classes, without computing any activation.

    The model runs once on PyTorch's ``meta`` device (shapes propagate, no arithmetic,
    the weights are neither read nor copied: ``functional_call`` with meta stand-ins);
    a model that cannot run there (data-dependent control flow, ``.item()`` calls) gets
    one real forward pass on sample 0 instead.
    """
    sample = dataset[0]
    image = sample[0] if isinstance(sample, (tuple, list)) else sample
    if not torch.is_tensor(image) or image.ndim < 1:
        raise ShapeError(
            f"The dataset must return (image tensor, label) pairs; got {type(image).__name__}."
        )
    found = _meta_shapes(model, image, layers, reductions)
    if found is not None:
        return found
    with ActivationRecorder(model, layers, reductions, check_finite=False) as rec:
        cap = rec(image.unsqueeze(0).to(device), sample_indices=np.array([0]))
    return dict(rec.output_shapes), _num_classes(cap)


def _meta_shapes(model: nn.Module, image: torch.Tensor, layers: list[str],
                 reductions: dict[str, Reduction]) -> tuple[dict, int] | None:
    """:func:`_probe` on the meta device; ``None`` when the model cannot run there.

    Reductions are applied too (on meta tensors), so an impossible one (``positions:k``
    with more positions than the layer has) raises :class:`ShapeError` here as it would
    on real data. Hooks are removed and the train/eval mode restored whatever happens.
    """
    from torch.func import functional_call

    shapes: dict[str, tuple[int, ...]] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            out = first_tensor(output, name)
            shapes[name] = tuple(out.shape[1:])
            reduce(out, reductions[name], sample_indices=np.array([0]), layer=name)

        return hook

    stand_ins = {name: torch.empty_like(t, device="meta")
                 for name, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    handles = register_forward_hooks(model, [(name, hook_for(name)) for name in layers])
    try:
        model.eval()
        with torch.no_grad():
            logits = functional_call(model, stand_ins, (image.unsqueeze(0).to("meta"),))
    except ShapeError:
        raise
    except Exception:  # noqa: BLE001 - any failure on meta: fall back to a real forward
        return None
    finally:
        remove_hooks(handles)
        model.train(was_training)
    logits = first_tensor(logits, "<model output>")
    if logits.ndim != 2:
        raise ShapeError("The model must return logits of shape (N, num_classes).")
    missing = [name for name in layers if name not in shapes]
    if missing:
        raise ShapeError(
            f"Layers {missing} did not run in the forward pass (unused modules?); "
            "select layers that the model calls.")
    return shapes, int(logits.shape[1])


def prepare_store(
    model: nn.Module,
    dataset: Dataset,
    layers: str | Iterable[str],
    path: str | Path,
    *,
    reductions: str | Reduction | Mapping[str, str | Reduction] = "mean",
    batch_size: int = 64,
    chunk_size: int | None = None,
    indices: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    model_name: str | None = None,
    model_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> tuple[ActivationStore, np.ndarray]:
    """Create (or reopen, to resume) the store for a capture; return it and the dataset rows.

    For processes that fill chunks elsewhere (:mod:`deepprofile.distributed`), which need
    the store before any chunk runs: a new store's layer shapes come from a forward pass
    on the meta device (shapes only, see :func:`_probe`); an existing store is reopened
    without one. Fills nothing. A store with another configuration raises
    :class:`~deepprofile.errors.StoreMismatchError` unless ``overwrite``.
    """
    path = Path(path)
    device = torch.device(device)
    plan = _plan(model, dataset, layers, reductions=reductions, batch_size=batch_size,
                 chunk_size=chunk_size, indices=indices, seed=seed, model_name=model_name,
                 model_info=model_info)
    config = _config(plan, dataset, _identity(model, dataset, plan.rows))
    if path.exists() and not overwrite:
        return _reopen(path, plan, config), plan.rows
    model.to(device)
    output_shapes, num_classes = _probe(model, dataset, plan.layers, plan.reductions, device)
    store = _create(path, plan, dataset, config, output_shapes, num_classes, batch_size,
                    overwrite)
    return store, plan.rows


def capture_to_store(
    model: nn.Module,
    dataset: Dataset,
    layers: str | Iterable[str],
    path: str | Path,
    *,
    reductions: str | Reduction | Mapping[str, str | Reduction] = "mean",
    batch_size: int = 64,
    chunk_size: int | None = None,
    indices: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    model_name: str | None = None,
    model_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    num_workers: int = 0,
    background_writes: bool | None = None,
) -> ActivationStore:
    """Record ``layers`` of ``model`` on ``dataset`` into a store at ``path``.

    Returns the finished store. An unfinished store with the same configuration is
    resumed; one with another configuration raises
    :class:`~deepprofile.errors.StoreMismatchError` unless ``overwrite``. A new store is
    created after the first batch, from the shapes that batch produced.
    ``background_writes`` (default: :func:`background_writes_pay`) writes chunks on a
    helper thread.
    """
    path = Path(path)
    device = torch.device(device)
    with store_lock(path):
        plan = _plan(model, dataset, layers, reductions=reductions, batch_size=batch_size,
                     chunk_size=chunk_size, indices=indices, seed=seed, model_name=model_name,
                     model_info=model_info)
        model.to(device)
        with ThreadPoolExecutor(1, thread_name_prefix="deepprofile-hash") as pool:
            # hashing the weights (and a folder's files) overlaps the first batch
            identity: Future = pool.submit(_identity, model, dataset, plan.rows)
            existing: ActivationStore | None = None
            if path.exists() and not overwrite:
                existing = _reopen(path, plan, _config(plan, dataset, identity.result()))
            store = existing
            pending = existing.pending_chunks() if existing is not None else list(
                range(-(-len(plan.rows) // plan.chunk_size)))

            def make_store(output_shapes: Mapping[str, tuple[int, ...]],
                           num_classes: int) -> ActivationStore:
                if existing is not None:
                    return existing
                return _create(path, plan, dataset, _config(plan, dataset, identity.result()),
                               output_shapes, num_classes, batch_size, overwrite)

            if pending:
                from deepprofile.progress import progress_bar

                with progress_bar(quiet) as progress:
                    done = existing.completed if existing is not None else 0
                    task = progress.add_task("capturing", total=len(plan.rows), completed=done)
                    store = _fill(model, dataset, plan.rows, pending, make_store,
                                  layers=plan.layers, reductions=plan.reductions,
                                  seed=plan.seed, chunk_size=plan.chunk_size,
                                  batch_size=batch_size, device=device,
                                  num_workers=num_workers, background=background_writes,
                                  on_batch=lambda n: progress.update(task, advance=n))
        assert store is not None
        if "fingerprint" not in store.metadata:
            store.finalize()
    return store


def background_writes_pay(device: torch.device) -> bool:
    """Whether chunks should be written on a helper thread rather than inline.

    On an accelerator, always. On a CPU, whenever there is more than one core, even when
    torch's threads use them all: Zarr's compression and file writes wait on the kernel
    with the GIL released, so they overlap the forward pass rather than add to it. In
    paired runs of ``benchmarks/capture.py`` (resnet18, 64 px, 2 cores, 2 torch threads)
    the thread was ahead of inline writes in 7 of 12 runs (medians this session 1.080x vs
    1.092x a plain forward pass): close, and the thread also takes any core the forward
    pass leaves. Inline writes were ahead when the forward pass is so light that the
    writer's Python code contends for the GIL (32 px: 0-6%). On a single core the thread
    can only take turns with the forward pass, so chunks are written inline there.
    """
    if device.type != "cpu":
        return True
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores > 1


def fill_chunks(
    model: nn.Module,
    dataset: Dataset,
    store: ActivationStore,
    rows: np.ndarray,
    chunk_ids: Iterable[int],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    background_writes: bool | None = None,
) -> None:
    """Capture the given chunks of ``store`` (rows ``rows[start:stop]`` of ``dataset``).

    Layers, reductions and seed come from the store's configuration, so any process
    holding the same model and dataset fills chunks exactly as the original run would.
    """
    config = store.config
    layer_names = list(config["layers"])
    reds = {name: parse_reduction(config["reductions"][name]) for name in layer_names}
    _fill(model, dataset, np.asarray(rows), list(chunk_ids), lambda shapes, classes: store,
          layers=layer_names, reductions=reds, seed=int(config["seed"]),
          chunk_size=store.chunk_size, batch_size=batch_size, device=torch.device(device),
          num_workers=num_workers, background=background_writes, on_batch=on_batch)


def _fill(
    model: nn.Module,
    dataset: Dataset,
    rows: np.ndarray,
    chunk_ids: list[int],
    get_store: Callable[[Mapping[str, tuple[int, ...]], int], ActivationStore],
    *,
    layers: list[str],
    reductions: dict[str, Reduction],
    seed: int,
    chunk_size: int,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    background: bool | None,
    on_batch: Callable[[int], None] | None,
) -> ActivationStore | None:
    """Capture ``chunk_ids``; ``get_store(output shapes, classes)`` gives the store to
    write to (creating it, for a new capture) once the first batch has run: called by the
    writer before it writes the first chunk. Returns the store (``None`` if no chunk ran)."""
    if background is None:
        background = background_writes_pay(device)
    with (ActivationRecorder(model, layers, reductions, seed=seed) as rec, ExitStack() as stack):
        writer: ChunkWriter | None = None
        for chunk_id in chunk_ids:
            start = chunk_id * chunk_size
            stop = min(start + chunk_size, len(rows))
            buffers: dict[str, list[np.ndarray]] = {f"layers/{n}": [] for n in layers}
            buffers.update(labels=[], predictions=[], logits=[], indices=[])
            loader = DataLoader(Subset(dataset, rows[start:stop].tolist()),
                                batch_size=batch_size, num_workers=num_workers,
                                pin_memory=device.type == "cuda")
            offset = start
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ShapeError("The dataset must return (image tensor, label) pairs.")
                images, labels = batch[0], batch[1]
                n = len(images)
                idx = rows[offset : offset + n]
                cap = rec(first_tensor(images).to(device, non_blocking=True), sample_indices=idx)
                if writer is None:
                    shapes, classes = dict(rec.output_shapes), _num_classes(cap)
                    writer = stack.enter_context(ChunkWriter(
                        None, background=background,
                        open_store=functools.partial(get_store, shapes, classes)))
                for name in layers:
                    buffers[f"layers/{name}"].append(cap.activations[name].numpy())
                buffers["labels"].append(torch.as_tensor(labels).numpy())
                buffers["logits"].append(cap.logits.numpy())
                buffers["predictions"].append(cap.logits.argmax(1).numpy())
                buffers["indices"].append(idx)
                offset += n
                if on_batch:
                    on_batch(n)
            # flagged done only once written, so a crash leaves a resumable store; on the
            # writer thread this overlaps the next chunk's forward passes
            assert writer is not None
            writer.submit(start, {k: np.concatenate(v) for k, v in buffers.items()})
    return None if writer is None else writer.store
