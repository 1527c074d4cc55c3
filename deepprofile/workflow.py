"""Capture runs: a model + a dataset -> a run folder with a store and ``run.json``.

Shared by the CLI and the demo so both record the same overview (model, weights
hash, dataset, layers, accuracy, parameters, versions, date, command).

Crash and concurrency safety: temporary files of killed writers are deleted
first; ``overwrite`` of an existing store moves that store's results aside
(``results.stale-<time>/``) before the store is replaced; the store itself is
locked for the capture and run.json is merged under the run folder's lock, so
captures into other stores of the same run keep each other's entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from deepprofile.capture.reducers import Reduction
from deepprofile.capture.runner import capture_to_store, store_lock
from deepprofile.capture.store import ActivationStore
from deepprofile.errors import DeepProfileError
from deepprofile.provenance import command_line, now_iso, package_versions
from deepprofile.results import clean_stale_temp
from deepprofile.rundir import RunDir
from deepprofile.testhooks import kill_point


def capture_run(
    model: nn.Module,
    dataset: Dataset,
    run_dir: str | Path,
    layers: str | Iterable[str],
    *,
    reductions: str | Reduction | Mapping[str, str | Reduction] = "mean",
    store_name: str = RunDir.STORE,
    model_info: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    batch_size: int = 64,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
    extra: Mapping[str, Any] | None = None,
    indices: Iterable[int] | None = None,
    scheduler: str | None = None,
    load_options: Mapping[str, Any] | None = None,
) -> tuple[RunDir, ActivationStore]:
    """Capture into ``run_dir/store_name`` and write (or update) ``run_dir/run.json``.

    ``scheduler`` (``local:N`` or ``tcp://HOST:PORT``) spreads the store's chunks over Dask
    workers (:func:`deepprofile.distributed.capture_distributed`): each loads ``checkpoint``
    (with ``load_options``, the :func:`~deepprofile.models.load_model` options used for
    ``model``) and rebuilds ``dataset`` from its spec. The store, results and run.json are
    those of a capture in this process.
    """
    if scheduler is not None and checkpoint is None:
        raise DeepProfileError("--scheduler needs a checkpoint file for the workers to load; "
                               "a random-init architecture would differ on every worker.")
    run = RunDir(run_dir)
    if run.path.exists() and not run.path.is_dir():
        raise DeepProfileError(f"The run folder {run.path} is a file; give --out a folder "
                               "(it is created if missing).")
    for folder in (run.path, run.results_dir):
        clean_stale_temp(folder)
    with store_lock(run.path / store_name):
        if overwrite and (run.path / store_name).exists():
            with run.lock():
                run.move_results_aside(store_name)
        if scheduler is None:
            store = capture_to_store(
                model, dataset, layers, run.path / store_name, reductions=reductions,
                batch_size=batch_size, chunk_size=chunk_size, device=device, seed=seed,
                model_info=model_info, overwrite=overwrite, quiet=quiet,
                indices=None if indices is None else list(indices),
            )
        else:
            store = _capture_on_dask(
                model, dataset, layers, run.path / store_name, scheduler, str(checkpoint),
                reductions=reductions, batch_size=batch_size, chunk_size=chunk_size,
                device=device, seed=seed, model_info=model_info, overwrite=overwrite,
                indices=indices, load_options=load_options)
        from deepprofile.capture.stats import capture_stats

        stem = Path(store_name).stem
        stats_name = "capture" if store_name == RunDir.STORE else f"capture_{stem}"
        run.write_result(stats_name, capture_stats(store))
    kill_point("run-json")
    meta = store.metadata
    summary = store.summary()

    def update(overview: dict[str, Any]) -> dict[str, Any]:
        stores = dict(overview.get("stores", {}))
        stores[store_name] = summary
        return {**overview,
                "model": meta["model"],
                "model_info": dict(model_info or {}),
                "checkpoint": checkpoint,
                "weights_hash": meta["weights_hash"],
                "dataset": meta["dataset"],
                "class_names": meta["class_names"],
                "n_samples": store.n_samples,
                "layers": store.layers,
                "accuracy": summary["accuracy"],
                "seed": seed,
                "stores": stores,
                "versions": package_versions(),
                "date": now_iso(),
                "command": command_line(),
                **dict(extra or {})}

    run.merge_overview(update)
    return run, store


def _capture_on_dask(model: nn.Module, dataset: Dataset, layers: str | Iterable[str],
                     path: Path, scheduler: str, checkpoint: str, *,
                     reductions: Any, batch_size: int, chunk_size: int | None,
                     device: str | torch.device, seed: int,
                     model_info: Mapping[str, Any] | None, overwrite: bool,
                     indices: Iterable[int] | None,
                     load_options: Mapping[str, Any] | None) -> ActivationStore:
    """The store filled by Dask workers of ``scheduler`` (see :func:`capture_run`)."""
    from deepprofile.data import dataset_spec
    from deepprofile.distributed import capture_distributed, client_for

    with client_for(scheduler) as client:
        return capture_distributed(
            checkpoint, dataset_spec(dataset), layers, path, reductions=reductions,
            client=client, batch_size=batch_size, chunk_size=chunk_size,
            indices=None if indices is None else list(indices), device=str(device), seed=seed,
            overwrite=overwrite, load_options=load_options, model=model,
            model_info=model_info, dataset=dataset)
