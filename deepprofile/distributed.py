"""Dask integration: fill one activation store from several workers at once, and run
per-layer analyses (persistence, mapper graphs) as one task per layer.

Each task loads the model from a checkpoint and the dataset from its spec (so
nothing large is shipped between processes), captures its share of the store's
chunks and commits them. Chunks are independent in the store (separate files and
completion flags), so workers never write the same file; a failed or killed run
is resumed by calling the function again (only the chunks not done are sent).

Dask is optional: ``pip install -e ".[dask]"``.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
            "Distributed runs (--scheduler, capture on workers) need Dask: "
            "pip install -e '.[dask]' (dask[distributed])."
        ) from exc
    return distributed


def _fill_task(checkpoint: str, dataset_spec: dict[str, Any], store_path: str,
               rows: np.ndarray, chunk_ids: list[int], batch_size: int, device: str,
               threads: int, caller_pid: int | None = None,
               load_options: dict[str, Any] | None = None) -> list[int]:
    import torch

    from deepprofile.capture.runner import fill_chunks
    from deepprofile.data import dataset_from_spec
    from deepprofile.data.adapters import dataset_spec as spec_of
    from deepprofile.models import load_model
    from deepprofile.provenance import weights_hash
    from deepprofile.testhooks import kill_point

    kill_point("capture-task")
    # torch's thread count is process-wide: set it only in a worker process of its own, never
    # in the caller's process (processes=False runs tasks as threads there), and restore it.
    own_process = caller_pid is None or os.getpid() != caller_pid
    previous = torch.get_num_threads()
    if own_process:
        torch.set_num_threads(threads)
    try:
        model, _ = load_model(checkpoint, device=device, **dict(load_options or {}))
        dataset = dataset_from_spec(dataset_spec)
        store = ActivationStore.open(store_path, verify=False)
        # a worker that sees another checkpoint or dataset (a changed file, another machine's
        # copy) must not fill chunks: the store would mix two models' activations
        if weights_hash(model) != store.config["weights_hash"]:
            raise DeepProfileError(
                f"The checkpoint {checkpoint} on worker pid {os.getpid()} holds other weights "
                "than the store was made with; give every worker the same file.")
        rebuilt = json.loads(json.dumps(spec_of(dataset)))  # as stored: tuples become lists
        if rebuilt != store.config["dataset"]:
            raise DeepProfileError(
                f"The dataset rebuilt on worker pid {os.getpid()} ({rebuilt}) differs "
                f"from the store's ({store.config['dataset']}); give every worker the same data.")
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
    load_options: Mapping[str, Any] | None = None,
    model: Any = None,
    model_info: Mapping[str, Any] | None = None,
    dataset: Any = None,
) -> ActivationStore:
    """Capture like :func:`~deepprofile.capture.capture_to_store`, with chunks spread over
    a Dask ``client`` (threads of this process when ``None``).

    Each task loads ``checkpoint`` with ``load_model(checkpoint, **load_options)`` and
    rebuilds the dataset from ``dataset_spec``, checks both against the store (weights hash,
    dataset spec) and fills its chunks; a task lost with its worker is retried by Dask and
    a killed run resumes when called again. ``model``/``model_info``/``dataset``: the
    caller's copies when already loaded (else loaded here from the same sources). The arrays
    are identical to a single-process capture of the same configuration.
    """
    distributed = _require_dask()
    from deepprofile.capture.runner import store_lock

    if not Path(checkpoint).is_file():
        raise DeepProfileError(
            f"Distributed capture needs a checkpoint file for the workers to load; {checkpoint} "
            "is not one (a random-init architecture would differ on every worker).")
    with store_lock(path):
        return _capture_distributed(
            distributed, checkpoint, dataset_spec, layers, path, reductions=reductions,
            client=client, chunks_per_task=chunks_per_task, batch_size=batch_size,
            chunk_size=chunk_size, indices=indices, device=device,
            threads_per_task=threads_per_task, seed=seed, overwrite=overwrite,
            load_options=dict(load_options or {}), model=model, model_info=model_info,
            dataset=dataset)


def _capture_distributed(distributed: Any, checkpoint: str | Path,
                         dataset_spec: Mapping[str, Any], layers: str | Iterable[str],
                         path: str | Path, *, reductions: str | Mapping[str, str],
                         client: Any, chunks_per_task: int, batch_size: int,
                         chunk_size: int | None, indices: Iterable[int] | None, device: str,
                         threads_per_task: int, seed: int, overwrite: bool,
                         load_options: dict[str, Any], model: Any,
                         model_info: Mapping[str, Any] | None,
                         dataset: Any) -> ActivationStore:
    import torch

    from deepprofile.capture.runner import prepare_store
    from deepprofile.data import dataset_from_spec
    from deepprofile.models import load_model

    # where a real one-image forward would run if the model cannot infer its shapes on the
    # meta device (prepare_store); workers may have GPUs, the caller need not
    probe_device: Any = "cpu"
    if model is None:
        model, info = load_model(checkpoint, device="cpu", **load_options)
        model_info = info.to_dict() if model_info is None else model_info
    else:  # the caller's copy stays where it is
        probe_device = next(iter(model.parameters()), torch.empty(0)).device
    if dataset is None:
        dataset = dataset_from_spec(dict(dataset_spec))
    # workers may run elsewhere (another working directory): absolute paths only
    checkpoint = Path(checkpoint).resolve()
    store, rows = prepare_store(
        model, dataset, layers, Path(path).resolve(), reductions=reductions,
        batch_size=batch_size, chunk_size=chunk_size,
        indices=None if indices is None else list(indices), seed=seed,
        model_info=model_info, overwrite=overwrite, device=probe_device,
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
                              rows, group, batch_size, str(device), threads_per_task,
                              os.getpid(), load_options, pure=False)
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


# -- per-layer analyses as Dask tasks ----------------------------------------------------
def parse_scheduler(text: str) -> tuple[str, Any]:
    """``("local", n_workers)`` for ``local:N``, ``("address", text)`` for ``tcp://HOST:PORT``.

    Anything else is a one-line :class:`DeepProfileError` saying what is accepted.
    """
    value = str(text).strip()
    hint = "use local:N (N worker processes on this machine) or tcp://HOST:PORT."
    kind, sep, rest = value.partition(":")
    if kind == "local":
        if not sep or not rest.isdigit() or int(rest) < 1:
            raise DeepProfileError(f"Scheduler {value!r}: local needs a worker count >= 1; "
                                   + hint)
        return "local", int(rest)
    if value.startswith("tcp://"):
        host, sep, port = value[len("tcp://"):].rpartition(":")
        if not host or not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise DeepProfileError(f"Scheduler {value!r} has no valid HOST:PORT; " + hint)
        return "address", value
    raise DeepProfileError(f"Scheduler {value!r} is not understood; " + hint)


@contextmanager
def _workers_skip_console_script() -> Iterator[None]:
    """Start (and restart) local worker processes without re-running the ``deepprofile``
    console script in each of them.

    A ``LocalCluster`` starts its workers with multiprocessing's ``spawn``, which runs the
    parent's main module again in every child (as ``__mp_main__``) unless that module is a
    package's ``__main__``, as under ``python -m deepprofile``. The console script's module
    only imports :mod:`deepprofile.cli` (torch, typer, every command: an idle worker held
    594 MB instead of 63 MB), which no task needs; while the cluster runs, it is described
    to spawn as ``deepprofile.__main__`` (which it is equivalent to), so workers are
    prepared as for ``python -m deepprofile``. Any other main module (a user's script or
    notebook) is left alone: its workers may need what it defines.
    """
    main = sys.modules.get("__main__")
    cli = sys.modules.get("deepprofile.cli")
    script = (main is not None and cli is not None and getattr(main, "__spec__", None) is None
              and Path(getattr(main, "__file__", None) or "").stem == "deepprofile"
              and getattr(main, "main", None) is getattr(cli, "main", None))
    if not script:
        yield
        return
    from importlib.machinery import ModuleSpec

    main.__spec__ = ModuleSpec("deepprofile.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


@contextmanager
def client_for(scheduler: str | None, *, timeout: float = 20.0) -> Iterator[Any]:
    """A Dask client for ``scheduler`` (``None`` yields ``None``: run in this process).

    ``local:N`` starts a LocalCluster of N single-threaded worker processes and closes it
    afterwards; ``tcp://HOST:PORT`` connects to a running scheduler (a ``dask scheduler``,
    a dask-jobqueue or Kubernetes cluster's address) and leaves it running; an address
    that does not answer within ``timeout`` seconds is a :class:`DeepProfileError`.
    """
    if scheduler is None:
        yield None
        return
    kind, value = parse_scheduler(scheduler)
    distributed = _require_dask()
    if kind == "local":
        with _workers_skip_console_script():
            cluster = distributed.LocalCluster(n_workers=value, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               worker_dashboard_address=None)
            client = distributed.Client(cluster)
            try:
                yield client
            finally:
                client.close()
                cluster.close()
    else:
        try:
            client = distributed.Client(value, timeout=f"{timeout}s")
        except OSError as exc:
            raise DeepProfileError(
                f"Cannot reach the Dask scheduler at {value} ({exc}); start it or check "
                "the address.") from None
        try:
            yield client
        finally:
            client.close()  # closes this connection only; the scheduler keeps running


def map_layers(fn: Callable[..., Any], layers: Sequence[Any], client: Any,
               *args: Any, on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[fn(layer, *args) for layer in layers]``, one Dask task per layer when ``client``
    is given (results returned in layer order; the first failure is raised).

    ``layers`` holds what each task needs: a layer name when the task reads the store
    itself, or a small per-layer payload (a subsampled cloud). ``on_result(i, result)``
    is called here as each layer's result arrives (in the order they finish).
    """
    if client is None:
        out = []
        for i, layer in enumerate(layers):
            out.append(fn(layer, *args))
            if on_result is not None:
                on_result(i, out[-1])
        return out
    name = getattr(fn, "__name__", "layer-task")
    futures = [client.submit(_layer_task, fn, layer, *args, key=f"{name}-{i}-{uuid.uuid4().hex}",
                             pure=False)
               for i, layer in enumerate(layers)]
    if on_result is None:
        return client.gather(futures)
    from dask.distributed import as_completed

    index = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    for future in as_completed(futures):
        i = index[future.key]
        results[i] = future.result()  # raises the task's error
        on_result(i, results[i])
    return results


def _layer_task(fn: Callable[..., Any], layer: Any, *args: Any) -> Any:
    """Run one per-layer task on a worker (the ``layer-task`` fault-injection point first)."""
    from deepprofile.testhooks import kill_point

    kill_point("layer-task")
    return fn(layer, *args)
