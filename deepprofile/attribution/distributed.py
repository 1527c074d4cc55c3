"""Attribution shards as Dask tasks (``deepprofile attribute RUN --scheduler ...``).

Each task loads the run's model itself (the checkpoint named in ``run.json``, checked
against the caller's weights hash), reads its images from the map store, computes its
shards under the caller's memory budget (:func:`~deepprofile.attribution.shards.
compute_shard`) and commits them into the store. Shards write disjoint chunks and their
own flags, so workers never write the same file; a worker killed mid-task leaves its
shard unflagged and Dask runs the task again elsewhere; a job killed as a whole is
resumed by running the command again (only pending shards are sent).

Kill points (:mod:`deepprofile.testhooks`) used by the tests: ``attribution-store-created``
(a new map store built under its temporary name, not yet renamed),
``attribution-shard`` (a shard committed) and ``attribution-task`` (a Dask task computed
its shard, nothing written yet).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deepprofile.attribution.memory import memory_budget
from deepprofile.attribution.shards import MapSettings, compute_shard
from deepprofile.attribution.store import MapStore
from deepprofile.errors import DeepProfileError
from deepprofile.testhooks import kill_point


def fill_shard(model: nn.Module, store: MapStore, shard: int, settings: MapSettings,
               budget: int | None, before_write: Any = None) -> None:
    """Compute shard ``shard`` of ``store`` with ``model`` and commit it
    (``before_write()``, if given, runs between the two: a test hook)."""
    start, stop = store.shard_bounds(shard)
    x = torch.from_numpy(store.images(start, stop))
    with memory_budget(budget):
        out = compute_shard(model, x, settings, start)
    if before_write is not None:
        before_write()
    store.write_shard(shard, out)


def fill_local(model: nn.Module, store: MapStore, settings: MapSettings,
               budget: int | None, on_shard: Any = None) -> list[int]:
    """Fill every pending shard in this process; returns the shards computed."""
    done = []
    for shard in store.pending_shards():
        fill_shard(model, store, shard, settings, budget)
        done.append(shard)
        if on_shard is not None:
            on_shard(shard)
    return done


def _shard_task(store_path: str, shard: int, source: Mapping[str, Any],
                settings: Mapping[str, Any], budget: int | None, weights_hash: str,
                caller_pid: int, threads: int) -> int:
    """One Dask task: load the run's model, compute and commit one shard."""
    from deepprofile.models import load_run_model
    from deepprofile.provenance import weights_hash as hash_of

    own_process = os.getpid() != caller_pid
    previous = torch.get_num_threads()
    if own_process:  # torch's thread count is process-wide: never change the caller's
        torch.set_num_threads(threads)
    try:
        model, _ = load_run_model(source["run_dir"], arch=source.get("arch"),
                                  num_classes=source.get("num_classes"),
                                  device=source.get("device", "cpu"))
        model.eval()
        if hash_of(model) != weights_hash:
            raise DeepProfileError(
                f"The run's checkpoint (weights {hash_of(model)}) is not the model given to "
                f"run_attribution (weights {weights_hash}); with a scheduler the workers "
                "load the run's own checkpoint, so pass that model.")
        store = MapStore.open(store_path)
        if shard in store.pending_shards():  # a retried task may find it done
            fill_shard(model, store, shard, MapSettings.from_dict(settings), budget,
                       before_write=lambda: kill_point("attribution-task"))
    finally:
        if own_process:
            torch.set_num_threads(previous)
    return shard


def fill_dask(client: Any, store: MapStore, settings: MapSettings, budget: int | None,
              source: Mapping[str, Any], weights_hash: str, *, threads: int = 1,
              on_shard: Any = None) -> list[int]:
    """Fill every pending shard of ``store`` as one Dask task per shard on ``client``.

    ``source`` tells the workers how to load the model: ``run_dir`` (absolute, on a file
    system every worker sees), ``arch``, ``num_classes``, ``device``. Returns the shards
    computed; the first failure is raised.
    """
    from dask.distributed import as_completed

    pending: Sequence[int] = store.pending_shards()
    tag = uuid.uuid4().hex[:8]
    futures = [client.submit(_shard_task, str(store.path.resolve()), shard, dict(source),
                             settings.to_dict(), budget, weights_hash, os.getpid(), threads,
                             key=f"attribution-shard-{shard}-{tag}", pure=False)
               for shard in pending]
    try:
        for future in as_completed(futures):
            shard = future.result()  # re-raises a task's error
            if on_shard is not None:
                on_shard(shard)
    finally:
        for future in futures:
            future.cancel()
    return list(pending)
