"""Attribution shards as Dask tasks (``deepprofile attribute RUN --scheduler ...``).

Each task loads the run's model itself (the checkpoint named in ``run.json``, checked
against the caller's weights hash), reads its images from the map store, computes its
shards under the caller's memory budget (:func:`~deepprofile.attribution.shards.
compute_shard`) and commits them into the store. Shards write disjoint chunks and their
own flags, so workers never write the same file; a worker killed mid-task leaves its
shard unflagged and Dask runs the task again elsewhere; a job killed as a whole is
resumed by running the command again (only pending shards are sent).

The map sets of the store (:mod:`deepprofile.attribution.mapsets`: the noisy fine-tuned
model's maps, the mapper nodes' maps) are filled the same way; for the fine-tuned set a
task loads the fine-tuned weights from the run folder
(:mod:`deepprofile.attribution.finetuned`) into the run's model.

Kill points (:mod:`deepprofile.testhooks`) used by the tests: ``attribution-store-created``
(a new map store built under its temporary name, not yet renamed),
``attribution-shard`` (a shard committed), ``attribution-set-created`` and
``attribution-set-shard`` (the same for a map set), ``attribution-finetuned`` (the
fine-tuned weights saved) and ``attribution-task`` (a Dask task computed its shard,
nothing written yet).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deepprofile.attribution.memory import memory_budget
from deepprofile.attribution.shards import MapSettings, compute_set_shard, compute_shard
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


def fill_set_shard(model: nn.Module, mset: Any, shard: int, budget: int | None,
                   before_write: Any = None) -> None:
    """Compute shard ``shard`` of the map set ``mset`` (:class:`~deepprofile.attribution.
    mapsets.MapSet`) with ``model`` (the fine-tuned model for ``finetuned``) and commit it."""
    start, stop = mset.shard_bounds(shard)
    x = torch.from_numpy(mset.images(start, stop))
    targets = None
    if mset.spec["kind"] == "finetuned":  # the run model's predictions, from the store
        targets = torch.from_numpy(mset.store.read("targets")[start:stop])
    with memory_budget(budget):
        out = compute_set_shard(model, x, mset.spec, start, targets)
    if before_write is not None:
        before_write()
    mset.write_shard(shard, out)


def fill_set_local(model: nn.Module, mset: Any, budget: int | None,
                   on_shard: Any = None) -> list[int]:
    """Fill every pending shard of a map set in this process; returns the shards computed."""
    done = []
    for shard in mset.pending_shards():
        fill_set_shard(model, mset, shard, budget)
        done.append(shard)
        if on_shard is not None:
            on_shard(shard)
    return done


def _worker_model(source: Mapping[str, Any], weights_hash: str) -> nn.Module:
    """The run's model as a worker loads it (checked against the caller's weights hash),
    with the noisy fine-tuned weights when ``source["finetuned"]`` names them."""
    from deepprofile.models import load_run_model
    from deepprofile.provenance import weights_hash as hash_of

    model, _ = load_run_model(source["run_dir"], arch=source.get("arch"),
                              num_classes=source.get("num_classes"),
                              device=source.get("device", "cpu"))
    model.eval()
    if hash_of(model) != weights_hash:
        raise DeepProfileError(
            f"The run's checkpoint (weights {hash_of(model)}) is not the model given to "
            f"run_attribution (weights {weights_hash}); with a scheduler the workers "
            "load the run's own checkpoint, so pass that model.")
    tuned = source.get("finetuned")
    if tuned:
        from deepprofile.attribution.finetuned import load_finetuned

        model = load_finetuned(model, tuned["path"], tuned["weights_hash"])
    return model


def _shard_task(store_path: str, set_name: str | None, shard: int,
                source: Mapping[str, Any], settings: Mapping[str, Any] | None,
                budget: int | None, weights_hash: str, caller_pid: int, threads: int) -> int:
    """One Dask task: load the run's model, compute and commit one shard of the store
    (``set_name`` ``None``) or of its map set ``set_name``."""
    own_process = os.getpid() != caller_pid
    previous = torch.get_num_threads()
    if own_process:  # torch's thread count is process-wide: never change the caller's
        torch.set_num_threads(threads)
    try:
        model = _worker_model(source, weights_hash)
        store = MapStore.open(store_path)
        hook = lambda: kill_point("attribution-task")  # noqa: E731
        if set_name is None:
            if shard in store.pending_shards():  # a retried task may find it done
                fill_shard(model, store, shard, MapSettings.from_dict(settings), budget,
                           before_write=hook)
        else:
            mset = store.map_set(set_name)
            if shard in mset.pending_shards():
                fill_set_shard(model, mset, shard, budget, before_write=hook)
    finally:
        if own_process:
            torch.set_num_threads(previous)
    return shard


def fill_dask(client: Any, store: Any, settings: MapSettings | None, budget: int | None,
              source: Mapping[str, Any], weights_hash: str, *, threads: int = 1,
              on_shard: Any = None) -> list[int]:
    """Fill every pending shard of ``store`` (a :class:`MapStore`, or one of its map sets
    with ``settings`` ``None``) as one Dask task per shard on ``client``.

    ``source`` tells the workers how to load the model: ``run_dir`` (absolute, on a file
    system every worker sees), ``arch``, ``num_classes``, ``device`` and, for the
    fine-tuned map set, ``finetuned`` (``path`` and ``weights_hash`` of the fine-tuned
    weights). Returns the shards computed; the first failure is raised.
    """
    from dask.distributed import as_completed

    set_name = getattr(store, "name", None) if settings is None else None
    root = store if set_name is None else store.store
    pending: Sequence[int] = store.pending_shards()
    tag = uuid.uuid4().hex[:8]
    kind = "attribution-shard" if set_name is None else f"attribution-{set_name}"
    futures = [client.submit(_shard_task, str(root.path.resolve()), set_name, shard,
                             dict(source), None if settings is None else settings.to_dict(),
                             budget, weights_hash, os.getpid(), threads,
                             key=f"{kind}-{shard}-{tag}", pure=False)
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
