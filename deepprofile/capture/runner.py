"""Capture a dataset's activations into an :class:`ActivationStore`, resumably.

Rows are processed chunk by chunk (a chunk is a whole number of batches); each
finished chunk is committed to the store before the next starts. Running the
same capture again after a crash skips the committed chunks and yields arrays
identical to an uninterrupted run: batches are aligned to chunk boundaries and
position sampling depends only on (seed, sample index).

Before trusting an existing store, a capture verifies it: a finished store is
read back chunk by chunk against its digests (and its layout against its
metadata), an unfinished one has its committed chunks checked, so a damaged
store raises :class:`~deepprofile.errors.CorruptStoreError` instead of
producing results from fill values. One capture at a time writes a store: a
lock file beside it (``.<store>.lock``, with the owner's pid) makes a second
concurrent capture fail with :class:`~deepprofile.errors.RunLockedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from deepprofile.capture.fingerprint import content_fingerprint
from deepprofile.capture.hooks import ActivationRecorder, first_tensor
from deepprofile.capture.reducers import Reduction, parse_reduction
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


def _probe(model: nn.Module, dataset: Dataset, layers: list[str],
           reductions: dict[str, Reduction], device: torch.device) -> tuple[dict, int]:
    """Output shape per layer and number of classes, from one forward pass on sample 0."""
    sample = dataset[0]
    image = sample[0] if isinstance(sample, (tuple, list)) else sample
    if not torch.is_tensor(image) or image.ndim < 1:
        raise ShapeError(
            f"The dataset must return (image tensor, label) pairs; got {type(image).__name__}."
        )
    with ActivationRecorder(model, layers, reductions, check_finite=False) as rec:
        cap = rec(image.unsqueeze(0).to(device), sample_indices=np.array([0]))
    if cap.logits is None or cap.logits.ndim != 2:
        raise ShapeError("The model must return logits of shape (N, num_classes).")
    return dict(rec.output_shapes), int(cap.logits.shape[1])


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

    Probes the layer shapes with one forward pass; fills nothing. A store with
    another configuration raises :class:`~deepprofile.errors.StoreMismatchError`
    unless ``overwrite``.
    """
    from deepprofile.data import class_names, dataset_spec

    device = torch.device(device)
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
    layer_names = resolve_layers(model, layers)
    if isinstance(reductions, Mapping):
        reds = {name: parse_reduction(reductions[name]) for name in layer_names}
    else:
        reds = {name: parse_reduction(reductions) for name in layer_names}
    chunk = chunk_size or max(batch_size, 256)
    chunk = max(batch_size, (chunk // batch_size) * batch_size)

    model.to(device)
    output_shapes, num_classes = _probe(model, dataset, layer_names, reds, device)
    stored = {n: reds[n].output_shape(output_shapes[n]) for n in layer_names}
    info = dict(model_info or {})
    spec = dataset_spec(dataset)
    config = {
        "model": model_name or info.get("arch") or type(model).__name__,
        "weights_hash": weights_hash(model),
        "layers": layer_names,
        "reductions": {n: str(r) for n, r in reds.items()},
        "dataset": spec,
        "indices_crc": int(np.bitwise_xor.reduce(rows * 2654435761 % 2**32)) if len(rows) else 0,
        "seed": seed,
    }
    content = content_fingerprint(dataset, rows)
    if content is not None:
        config["content_fingerprint"] = content
    metadata = {
        "model": config["model"], "model_info": info, "weights_hash": config["weights_hash"],
        "dataset": spec,
        "class_names": class_names(dataset) or [str(i) for i in range(num_classes)],
        "seed": seed, "versions": package_versions(), "created": now_iso(),
        "batch_size": batch_size,
    }
    store = ActivationStore.create(
        path, config=config, layer_shapes=stored, reductions={n: str(r) for n, r in reds.items()},
        output_shapes=output_shapes, n_samples=len(rows), num_classes=num_classes,
        chunk_size=chunk, metadata=metadata, overwrite=overwrite,
    )
    store.check_provenance()
    if store.is_complete:
        store.verify_all()
    else:
        store.verify_all(np.flatnonzero(store.done_chunks()))
    return store, rows


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
) -> ActivationStore:
    """Record ``layers`` of ``model`` on ``dataset`` into a store at ``path``.

    Returns the finished store. An unfinished store with the same configuration is
    resumed; one with another configuration raises
    :class:`~deepprofile.errors.StoreMismatchError` unless ``overwrite``.
    """
    with store_lock(path):
        store, rows = prepare_store(
            model, dataset, layers, path, reductions=reductions, batch_size=batch_size,
            chunk_size=chunk_size, indices=indices, device=device, seed=seed,
            model_name=model_name, model_info=model_info, overwrite=overwrite,
        )
        if not store.is_complete:
            from deepprofile.progress import progress_bar

            with progress_bar(quiet) as progress:
                task = progress.add_task("capturing", total=len(rows), completed=store.completed)
                fill_chunks(model, dataset, store, rows, store.pending_chunks(),
                            batch_size=batch_size, device=device, num_workers=num_workers,
                            on_batch=lambda n: progress.update(task, advance=n))
        if "fingerprint" not in store.metadata:
            store.finalize()
    return store


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
) -> None:
    """Capture the given chunks of ``store`` (rows ``rows[start:stop]`` of ``dataset``).

    Layers, reductions and seed come from the store's configuration, so any process
    holding the same model and dataset fills chunks exactly as the original run would.
    """
    config = store.config
    layer_names = list(config["layers"])
    reds = {name: parse_reduction(config["reductions"][name]) for name in layer_names}
    device = torch.device(device)
    with (ActivationRecorder(model, layer_names, reds, seed=int(config["seed"])) as rec,
          ChunkWriter(store) as writer):
        for chunk_id in chunk_ids:
            start, stop = store.chunk_bounds(chunk_id)
            buffers: dict[str, list[np.ndarray]] = {f"layers/{n}": [] for n in layer_names}
            buffers.update(labels=[], predictions=[], logits=[], indices=[])
            loader = DataLoader(Subset(dataset, rows[start:stop].tolist()),
                                batch_size=batch_size, num_workers=num_workers,
                                pin_memory=device.type == "cuda")
            offset = start
            for batch in loader:
                images, labels = batch[0], batch[1]
                n = len(images)
                idx = rows[offset : offset + n]
                cap = rec(first_tensor(images).to(device, non_blocking=True), sample_indices=idx)
                for name in layer_names:
                    buffers[f"layers/{name}"].append(cap.activations[name].numpy())
                buffers["labels"].append(torch.as_tensor(labels).numpy())
                buffers["logits"].append(cap.logits.numpy())
                buffers["predictions"].append(cap.logits.argmax(1).numpy())
                buffers["indices"].append(idx)
                offset += n
                if on_batch:
                    on_batch(n)
            # written (and checksummed) on the writer thread while the next chunk runs;
            # flagged done only once written, so a crash leaves a resumable store
            writer.submit(start, {k: np.concatenate(v) for k, v in buffers.items()})
