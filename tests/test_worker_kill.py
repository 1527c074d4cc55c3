"""A Dask worker process killed mid-task (SIGKILL, no cleanup) costs a retry, not the run:
capture, topology, mapper and spectral on a two-worker LocalCluster still end with the
results of one process (issue 17).

The kill-once hook (``DEEPPROFILE_TEST_KILL_ONCE``, :mod:`deepprofile.testhooks`) makes the
first worker to start a task die; the scheduler reschedules the lost task
(``distributed.scheduler.allowed-failures``, default 3, counts such deaths per task) on the
other worker (the nanny also starts a new worker process, which the tests do not wait for).
The points (``capture-task``, ``layer-task``) are reached only inside worker tasks, never by
this process, so the one-process references run with the variable set. Slow: each test
starts its own worker processes, which import torch (15-25 s per test on 2 busy cores).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import deepprofile
from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.data import ArrayDataset, ShapesDataset
from deepprofile.models import SmallResNet, load_model, save_checkpoint
from deepprofile.results import comparable
from deepprofile.testhooks import ENV_ONCE

distributed = pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow

ROOT = str(Path(deepprofile.__file__).resolve().parents[1])
LAYERS = ["stem", "layer1", "layer2", "layer3"]


@dataclass
class Killer:
    """A fresh two-worker-process cluster whose workers carry the kill-once hook."""

    client: Any
    address: str
    marker: Path
    pids: frozenset

    def assert_one_worker_died(self) -> None:
        """The marker names one of the two first workers, and that one is gone."""
        assert self.marker.exists(), "no worker reached the kill point"
        dead = int(self.marker.read_text())
        assert dead in self.pids
        assert dead not in set(self.client.run(os.getpid).values())


@pytest.fixture
def killer(tmp_path) -> Killer:
    """One cluster per test, so no test waits on the restart of another's dead worker (the
    nanny restarts it, but on 2 busy cores that once took over 2 minutes)."""
    import dask

    assert dask.config.get("distributed.scheduler.allowed-failures") >= 1  # default 3
    marker = tmp_path / "killed"
    patch = pytest.MonkeyPatch()
    patch.setenv(ENV_ONCE, f"capture-task,layer-task:{marker}")  # inherited by the workers
    patch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            pids = frozenset(client.run(os.getpid).values())
            yield Killer(client, cluster.scheduler_address, marker, pids)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def model() -> SmallResNet:
    torch.manual_seed(0)
    return SmallResNet(widths=(4, 8, 8)).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory, model) -> Path:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(90, 1, 12, 12)).astype(np.float32),
                        rng.integers(0, 3, 90), name="noise")
    root = tmp_path_factory.mktemp("killrun") / "run"
    capture_to_store(model, data, LAYERS, root / "activations.zarr",
                     reductions="max_position", quiet=True)
    capture_to_store(model, data, ["layer2.branch.3"], root / "flat.zarr",
                     reductions="flatten", quiet=True)
    return root


def test_capture_survives_a_killed_worker(tmp_path, killer) -> None:
    from deepprofile.distributed import capture_distributed

    torch.manual_seed(0)
    net = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8))
    ckpt = save_checkpoint(tmp_path / "m.pt", net, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)})
    data = ShapesDataset(n=70, seed=3)
    reds = {"layer1": "positions:3", "layer3": "mean"}
    loaded, info = load_model(ckpt)  # as the workers load it, so the configs agree
    ref = capture_to_store(loaded, data, ["layer1", "layer3"], tmp_path / "ref.zarr",
                           reductions=reds, batch_size=8, chunk_size=16, quiet=True,
                           model_info=info.to_dict())
    got = capture_distributed(ckpt, data.spec(), ["layer1", "layer3"], tmp_path / "d.zarr",
                              reductions=reds, client=killer.client, batch_size=8,
                              chunk_size=16, chunks_per_task=2)
    killer.assert_one_worker_died()
    assert got.is_complete and got.n_chunks == 5
    for key in ref.array_keys():
        np.testing.assert_array_equal(got._group[key][...], ref._group[key][...])
    assert got.config == ref.config  # so the fingerprint covers the same configuration
    assert got.metadata["fingerprint"] == ref.metadata["fingerprint"]


def test_topology_survives_a_killed_worker(run, killer) -> None:
    from deepprofile.topology import run_topology

    params = dict(n_points=40, quiet=True, metrics=("bottleneck",), cka=("linear",),
                  sensitivity_k=(0, 1), write=False)
    ref = run_topology(run, **params).to_dict()
    got = run_topology(run, scheduler=killer.address, **params).to_dict()
    killer.assert_one_worker_died()
    assert comparable(got) == comparable(ref)


def test_mapper_survives_a_killed_worker(run, killer) -> None:
    from deepprofile.mapper.pipeline import run_mapper

    params = dict(layers=["layer2", "layer3"], quiet=True, intervals=8, thumbnails=False,
                  merge=False)
    ref = run_mapper(run, **params).to_dict()
    got = run_mapper(run, scheduler=killer.address, **params).to_dict()
    killer.assert_one_worker_died()
    assert comparable(got) == comparable(ref)


def test_spectral_survives_a_killed_worker(run, model, killer) -> None:
    from deepprofile.spectral.pipeline import run_spectral

    store = ActivationStore.open(run / "flat.zarr")
    params = dict(layers=["layer2.branch.3"], seed=1, quiet=True, store=store)
    ref = run_spectral(model, None, **params).to_dict()
    got = run_spectral(model, None, scheduler=killer.address, **params).to_dict()
    killer.assert_one_worker_died()
    assert got["projections"] and got["random_init"]
    assert json.dumps(got) == json.dumps(ref)  # bitwise, spectral holds no timings
