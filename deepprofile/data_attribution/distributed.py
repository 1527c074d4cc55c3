"""TRAK featurisation as Dask tasks, sharded by checkpoint and training-sample range.

One task per (checkpoint, run of ``chunks_per_task`` pending chunks) of the run's
feature store (``RUN_DIR/data_attribution.zarr``). Each task loads the checkpoint's
weights and the training data itself (rebuilt from the dataset's spec when it has one,
otherwise the dataset is scattered to the workers once), computes its chunks with the same
loop as one process (:func:`~deepprofile.data_attribution.featurize.featurize_chunks`),
writes their rows and sets their completion flags. Chunks are separate files with their
own flags, so workers never write the same file, a retried task (worker killed) skips
chunks already flagged, and a killed job resumes with the pending chunks only. Scoring
(``X^T X``, target gradients) stays in the calling process.

Batches start at each chunk's first row in both paths, so a task computes exactly the
batches one process would: the features equal the one-process features bit for bit when
the kernels are deterministic for a given batch (``tests/data_attribution/
test_distributed.py`` checks equality on a two-worker cluster).

The store must be on a file system every worker sees at the same path.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Sequence
from typing import Any

import cloudpickle
import torch
from torch.utils.data import Dataset

from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import (
    CheckpointInfo,
    DataAttributionError,
    ScopedGradientComputer,
    TrakEnsemble,
    file_hash,
    load_state,
    make_projector,
)

#: dataset specs a worker can rebuild by itself (``deepprofile.data.dataset_from_spec``)
_REBUILDABLE = ("digits", "shapes", "folder")


def dataset_payload(dataset: Dataset, client: Any) -> Any:
    """What a task needs to get the training set: its spec when the worker can rebuild it
    (nothing large is shipped), else the dataset itself, scattered to every worker once."""
    spec = getattr(dataset, "spec", None)
    spec = spec() if callable(spec) else None
    if isinstance(spec, dict) and spec.get("name") in _REBUILDABLE \
            and int(spec.get("n", len(dataset))) == len(dataset):  # type: ignore[arg-type]
        return {"spec": dict(spec)}
    return {"dataset": client.scatter(dataset, broadcast=True, hash=False)}


def _dataset(payload: dict[str, Any]) -> Dataset:
    if "spec" in payload:
        from deepprofile.data import dataset_from_spec

        return dataset_from_spec(dict(payload["spec"]))
    return payload["dataset"]


def featurise_task(model: bytes, data: dict[str, Any], ckpt: CheckpointInfo,
                   store_path: str, key: str, chunk_ids: list[int],
                   scope: list[str] | None, proj_dim: int, projector_seed: int,
                   batch_size: int, device: str, threads: int,
                   caller_pid: int | None = None, budget: int | None = None) -> list[int]:
    """Featurise ``chunk_ids`` of feature array ``key`` for one checkpoint (a Dask task).

    ``model`` (the architecture, pickled: Dask's own serialisation of an ``nn.Module``
    rebuilds its hook tables as plain dicts, on which torch cannot register hooks) is
    unpickled into a private copy that gets the checkpoint's weights, read from
    ``ckpt.path`` here. Chunks flagged done meanwhile (a retried task) are skipped.
    ``budget``: the caller's memory budget in bytes (a context setting does not travel to
    workers). Returns the chunks computed.
    """
    from deepprofile.data_attribution.featurize import featurize_chunks

    # torch's thread count is process-wide: set it only in a worker process of its own, never
    # in the caller's process (processes=False runs tasks as threads there), and restore it.
    own_process = caller_pid is None or os.getpid() != caller_pid
    previous = torch.get_num_threads()
    if own_process:
        torch.set_num_threads(threads)
    try:
        feats = FeatureStore(store_path).get(key)
        todo = sorted(set(chunk_ids) & set(feats.pending_chunks()))
        if not todo:
            return []
        # a worker that sees another checkpoint file or training set (a changed file, another
        # machine's copy) must not write features: the store would mix two models' features
        if file_hash(ckpt.path) != ckpt.sha256:
            raise DataAttributionError(
                f"The checkpoint {ckpt.path} on worker pid {os.getpid()} is not the file the "
                "features were keyed on (SHA-256 differs); give every worker the same file.")
        train_set = _dataset(data)
        if len(train_set) != feats.n_train:  # type: ignore[arg-type]
            raise DataAttributionError(
                f"The training set on worker pid {os.getpid()} has {len(train_set)} images, "  # type: ignore[arg-type]
                f"the features {feats.n_train}; give every worker the same data.")
        dev = torch.device(device)
        net = pickle.loads(model).eval()
        net.load_state_dict(load_state(ckpt.path))
        for p in net.parameters():
            p.requires_grad_(True)
        net.to(dev)
        gc = ScopedGradientComputer(net, MarginOutput(), scope, dev)
        projector = make_projector(gc.n_params, proj_dim, projector_seed, ckpt.model_id, dev)
        featurize_chunks(gc, projector, train_set, feats, todo, model_id=ckpt.model_id,
                         n_params=gc.n_params, batch_size=batch_size, device=dev,
                         budget=budget)
        return todo
    finally:
        if own_process:
            torch.set_num_threads(previous)


def featurize_distributed(ens: TrakEnsemble, client: Any, scope: Sequence[str] | None = None,
                          scope_name: str = "all", *, chunks_per_task: int = 1,
                          threads_per_task: int = 1) -> list[tuple[int, int]]:
    """Fill ``ens``'s feature store for every checkpoint with Dask tasks on ``client``.

    Only pending chunks are sent; returns the ``(model_id, chunk_id)`` pairs computed.
    Afterwards ``ens.scores`` finds every chunk done and only scores.
    """
    from dask import distributed

    from deepprofile.attribution.memory import current_budget
    from deepprofile.progress import progress_bar

    jobs = []
    for ckpt in ens.checkpoints:
        feats = ens.feature_array(ckpt, scope, scope_name)
        pending = feats.pending_chunks()
        key = feats.key
        jobs += [(ckpt, key, pending[i:i + chunks_per_task])
                 for i in range(0, len(pending), chunks_per_task)]
    if not jobs:
        return []
    budget = current_budget()  # a context setting: passed to the workers explicitly
    model = client.scatter(cloudpickle.dumps(ens.model), broadcast=True, hash=False)
    data = dataset_payload(ens.train_set, client)
    store = str(ens.store.path.resolve())
    futures = {
        client.submit(featurise_task, model, data, ckpt, store, key, group,
                      None if scope is None else list(scope), ens.proj_dim,
                      ens.projector_seed, ens.batch_size, str(ens.device), threads_per_task,
                      os.getpid(), budget,
                      key=f"trak-features-{ckpt.model_id}-{group[0]}-{uuid.uuid4().hex}",
                      pure=False): ckpt.model_id
        for ckpt, key, group in jobs}
    done: list[tuple[int, int]] = []
    with progress_bar(ens.quiet) as bar:
        task = bar.add_task(f"TRAK features ({scope_name}, {len(futures)} Dask tasks)",
                            total=len(futures))
        try:
            for future in distributed.as_completed(futures):
                done += [(futures[future], c) for c in future.result()]  # a failure raises
                bar.advance(task, 1)
        except BaseException:
            client.cancel(list(futures))
            raise
    return sorted(done)
