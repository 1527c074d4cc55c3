"""Dask integration: fill one activation store from several workers at once.

Each task loads the model from a checkpoint and the dataset from its spec (so
nothing large is shipped between processes), captures its share of the store's
chunks and commits them. Chunks are independent in the store (separate files and
completion flags), so workers never write the same file; a failed or killed run
is resumed by calling the function again (only the chunks not done are sent).

Dask is optional: ``pip install -e ".[dask]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.capture.store import ActivationStore
from deepprofile.errors import DeepProfileError


def _require_dask():
    try:
        from dask import distributed
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise DeepProfileError(
            "Distributed capture needs Dask: pip install -e '.[dask]' (dask[distributed])."
        ) from exc
    return distributed


def _fill_task(checkpoint: str, dataset_spec: dict[str, Any], store_path: str,
               rows: np.ndarray, chunk_ids: list[int], batch_size: int, device: str,
               threads: int, caller_pid: int | None = None) -> list[int]:
    import torch

    from deepprofile.capture.runner import fill_chunks
    from deepprofile.data import dataset_from_spec
    from deepprofile.models import load_model

    # torch's thread count is process-wide: set it only in a worker process of its own, never
    # in the caller's process (processes=False runs tasks as threads there), and restore it.
    own_process = caller_pid is None or os.getpid() != caller_pid
    previous = torch.get_num_threads()
    if own_process:
        torch.set_num_threads(threads)
    try:
        model, _ = load_model(checkpoint, device=device)
        dataset = dataset_from_spec(dataset_spec)
        store = ActivationStore.open(store_path, verify=False)
        fill_chunks(model, dataset, store, rows, chunk_ids, batch_size=batch_size,
                    device=device)
    finally:
        if own_process:
            torch.set_num_threads(previous)
    return chunk_ids


def capture_distributed(
    checkpoint: str | Path,
    dataset_spec: Mapping[str, Any],
    layers: str | Iterable[str],
    path: str | Path,
    *,
    reductions: str | Mapping[str, str] = "mean",
    client: Any = None,
    chunks_per_task: int = 1,
    batch_size: int = 64,
    chunk_size: int | None = None,
    indices: Iterable[int] | None = None,
    device: str = "cpu",
    threads_per_task: int = 1,
    seed: int = 0,
    overwrite: bool = False,
) -> ActivationStore:
    """Capture like :func:`~deepprofile.capture.capture_to_store`, with chunks spread over
    a Dask ``client`` (a local cluster with one worker per core when ``None``).

    The arrays are identical to a single-process capture of the same configuration.
    """
    distributed = _require_dask()
    from deepprofile.capture.runner import store_lock

    with store_lock(path):
        return _capture_distributed(
            distributed, checkpoint, dataset_spec, layers, path, reductions=reductions,
            client=client, chunks_per_task=chunks_per_task, batch_size=batch_size,
            chunk_size=chunk_size, indices=indices, device=device,
            threads_per_task=threads_per_task, seed=seed, overwrite=overwrite)


def _capture_distributed(distributed: Any, checkpoint: str | Path,
                         dataset_spec: Mapping[str, Any], layers: str | Iterable[str],
                         path: str | Path, *, reductions: str | Mapping[str, str],
                         client: Any, chunks_per_task: int, batch_size: int,
                         chunk_size: int | None, indices: Iterable[int] | None, device: str,
                         threads_per_task: int, seed: int, overwrite: bool) -> ActivationStore:
    from deepprofile.capture.runner import prepare_store
    from deepprofile.data import dataset_from_spec
    from deepprofile.models import load_model

    model, info = load_model(checkpoint, device="cpu")
    dataset = dataset_from_spec(dict(dataset_spec))
    store, rows = prepare_store(
        model, dataset, layers, path, reductions=reductions, batch_size=batch_size,
        chunk_size=chunk_size, indices=None if indices is None else list(indices), seed=seed,
        model_info=info.to_dict(), overwrite=overwrite,
    )
    pending = store.pending_chunks()
    if pending:
        own_client = client is None
        if own_client:
            # threads: torch releases the GIL, and nothing is pickled between processes
            client = distributed.Client(processes=False, threads_per_worker=1,
                                        dashboard_address=None)
        try:
            groups = [pending[i : i + chunks_per_task]
                      for i in range(0, len(pending), chunks_per_task)]
            futures = [
                client.submit(_fill_task, str(checkpoint), dict(dataset_spec), str(store.path),
                              rows, group, batch_size, device, threads_per_task,
                              os.getpid(), pure=False)
                for group in groups
            ]
            distributed.wait(futures)
            for future in futures:
                future.result()  # re-raise the first failure
        finally:
            if own_client:
                client.close()
    store = ActivationStore.open(store.path)
    if "fingerprint" not in store.metadata:
        store.finalize()
    return store
