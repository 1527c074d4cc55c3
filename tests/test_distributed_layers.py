"""Per-layer analyses on Dask (--scheduler) give the results of one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from deepprofile.capture.runner import capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.errors import DeepProfileError
from deepprofile.models.small import SmallResNet
from deepprofile.results import comparable

distributed = pytest.importorskip("dask.distributed")

LAYERS = ["stem", "layer1", "layer2", "layer3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SmallResNet(widths=(4, 8, 8)).eval()
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(90, 1, 12, 12)).astype(np.float32),
                        rng.integers(0, 3, 90), name="noise")
    root = tmp_path_factory.mktemp("sched") / "run"
    capture_to_store(model, data, LAYERS, root / "activations.zarr",
                     reductions="max_position", quiet=True)
    return root


@pytest.fixture(scope="module")
def address():
    """A two-worker cluster in this process, reached by its tcp:// address like a remote
    scheduler (worker processes are exercised by test_local_processes_cluster)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_parse_scheduler_accepts_and_refuses() -> None:
    from deepprofile.distributed import parse_scheduler

    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local", "local:0", "local:x", "tcp://host", "tcp://:8786", "tcp://h:99999",
                "http://h:1", "dask"):
        with pytest.raises(DeepProfileError, match="local:N .* tcp://HOST:PORT"):
            parse_scheduler(bad)


def test_map_layers_keeps_layer_order_and_raises_failures(address) -> None:
    from deepprofile.distributed import client_for, map_layers

    with client_for(address) as client:
        assert map_layers(divmod, [7, 9, 11, 13], client, 4) == [(1, 3), (2, 1), (2, 3),
                                                                  (3, 1)]
        with pytest.raises(ZeroDivisionError):
            map_layers(divmod, [1, 2], client, 0)
    assert map_layers(divmod, [7], None, 4) == [(1, 3)]


def test_topology_with_scheduler_equals_one_process(run, address) -> None:
    from deepprofile.topology import run_topology

    params = dict(n_points=50, quiet=True, metrics=("sliced_wasserstein", "bottleneck"),
                  cka=("linear",), sensitivity_k=(0, 1, 2), write=True)
    path = run / "results" / "topology.json"
    ref = comparable(run_topology(run, **params).to_dict())
    ref_file = comparable(json.loads(path.read_text()))
    got = run_topology(run, scheduler=address, **params)
    assert comparable(got.to_dict()) == ref  # bitwise: every float compared exactly
    assert comparable(json.loads(path.read_text())) == ref_file
    assert set(got.sensitivity) == set(LAYERS) and len(got.layers) == 4


def test_mapper_with_scheduler_equals_one_process(run, address) -> None:
    from deepprofile.mapper.pipeline import run_mapper

    params = dict(quiet=True, intervals=8, thumbnails=False, merge=False)
    ref = run_mapper(run, **params).to_dict()
    got = run_mapper(run, scheduler=address, **params).to_dict()
    assert comparable(got) == comparable(ref)
    assert list(got["layers"]) == LAYERS and got["distances"]


def test_cli_refuses_a_bad_scheduler_before_any_work(run) -> None:
    from deepprofile.mapper.cli import register as register_mapper
    from deepprofile.topology.cli import register as register_topology

    app = typer.Typer()
    register_topology(app)
    register_mapper(app)
    for command in ("topology", "mapper"):
        res = CliRunner().invoke(app, [command, str(run), "--scheduler", "local:zero"])
        assert res.exit_code == 2, res.output
        assert "local:N" in res.output and "Traceback" not in res.output


def test_unreachable_scheduler_is_one_line_error(run) -> None:
    from deepprofile.distributed import client_for

    with pytest.raises(DeepProfileError, match="Cannot reach the Dask scheduler"):
        with client_for("tcp://127.0.0.1:9", timeout=1):
            pass


@pytest.mark.slow  # starts two worker processes: 6-10 s here
def test_local_processes_cluster(run) -> None:
    """local:N starts worker processes: tasks pickle, read the store there, and match."""
    from deepprofile.mapper.pipeline import run_mapper

    params = dict(layers=["layer2", "layer3"], quiet=True, intervals=8, thumbnails=False,
                  merge=False)
    ref = run_mapper(run, **params).to_dict()
    got = run_mapper(run, scheduler="local:2", **params).to_dict()
    assert comparable(got) == comparable(ref)


def test_cli_runs_topology_and_mapper_on_a_scheduler(run, address, tmp_path) -> None:
    from deepprofile.mapper.cli import register as register_mapper
    from deepprofile.topology.cli import register as register_topology

    app = typer.Typer()
    register_topology(app)
    register_mapper(app)
    out = tmp_path / "topo.json"
    res = CliRunner().invoke(app, ["topology", str(run), "--n-points", "40", "-m", "bottleneck",
                                   "--scheduler", address, "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["layers"] == LAYERS
    res = CliRunner().invoke(app, ["mapper", str(run), "-l", "layer3", "--intervals", "6",
                                   "--no-thumbnails", "--scheduler", address, "-q"])
    assert res.exit_code == 0, res.output
    assert (run / "mapper" / "layer3.html").is_file()


def test_missing_dask_is_one_line_error(monkeypatch) -> None:
    import sys

    from deepprofile.distributed import client_for

    for name in ("dask", "dask.distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # the import now fails
    with pytest.raises(DeepProfileError, match=r"pip install -e '\.\[dask\]'"):
        with client_for("local:1"):
            pass


def test_topology_compare_with_scheduler_equals_one_process(run, address) -> None:
    from deepprofile.topology import compare_topology

    params = dict(n_points=40, quiet=True, metrics=("bottleneck",))
    ref = compare_topology(run, run, **params).to_dict()
    got = compare_topology(run, run, scheduler=address, **params).to_dict()
    assert comparable(got) == comparable(ref) and got["accuracy"] == 1.0
