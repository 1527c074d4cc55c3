"""Topology, mapper and spectral resume after the whole job is killed (issue 17).

Each finished layer is kept in ``RUN_DIR/results/.partial/<analysis>`` (see
:mod:`deepprofile.partial`) until the final JSON is written. The kill test runs each analysis
as a process of its own (``resume_worker.py``) that SIGKILLs itself right after saving its
first layer (``DEEPPROFILE_TEST_KILL_ONCE=layer-saved:<marker>``), runs it again, counts the
per-layer calls of the rerun and compares its JSON with an uninterrupted run's, float for
float. The other tests crash in this process (an exception in a layer's function) to check
Dask workers, damaged files and changed settings cheaply.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import deepprofile
from deepprofile.partial import PARTIAL_DIR, LayerResults, Slot
from deepprofile.results import comparable
from deepprofile.testhooks import ENV, ENV_ONCE

WORKER = Path(__file__).with_name("resume_worker.py")
ROOT = str(Path(deepprofile.__file__).resolve().parents[1])
ANALYSES = ("topology", "mapper", "spectral")


def _worker():
    spec = importlib.util.spec_from_file_location("resume_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _worker()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "run"
    worker.make_run(root)
    return root


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A fresh copy of the tiny run folder (stores only, no results)."""
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


def _spawn(pairs: list[str], kill_marker: Path | None = None) -> tuple[int, list[dict]]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(ENV, None)
    env.pop(ENV_ONCE, None)
    if kill_marker is not None:
        env[ENV_ONCE] = f"layer-saved:{kill_marker}"
    proc = subprocess.run([sys.executable, str(WORKER), *pairs], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -9), proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []
    return proc.returncode, counts


def _result(run_dir: Path, name: str) -> dict:
    """The final JSON with run-specific values (paths, times, command) taken out."""
    text = (run_dir / "results" / f"{name}.json").read_text()
    return comparable(json.loads(text.replace(str(run_dir), "RUN")))


def _partials(run_dir: Path) -> list[str]:
    folder = run_dir / "results" / PARTIAL_DIR
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json"))


def test_kill_after_first_layer_then_rerun_is_identical(run, tmp_path) -> None:
    """SIGKILL after the first saved layer; the rerun computes only the other layers and
    writes the uninterrupted run's JSON (the reference runs in the rerun's process)."""
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    for analysis in ANALYSES:
        code, _ = _spawn([f"{analysis}:{run}"], tmp_path / f"killed-{analysis}")
        assert code == -9, f"{analysis} was not killed"
        assert not (run / "results" / f"{analysis}.json").exists()
        saved = [p for p in _partials(run) if p.startswith(analysis + "/")]
        assert len(saved) == 1, saved  # the first layer, and nothing else
    code, counts = _spawn([f"{a}:{reference}" for a in ANALYSES]
                          + [f"{a}:{run}" for a in ANALYSES])
    assert code == 0
    full = dict(zip(ANALYSES, counts[:3], strict=True))
    rerun = dict(zip(ANALYSES, counts[3:], strict=True))
    assert full["topology"] == {"_persistence_layer": 4, "_sweep_layer": 4}
    assert rerun["topology"] == {"_persistence_layer": 3, "_sweep_layer": 4}
    assert full["mapper"] == {"_graph_task": 4} and rerun["mapper"] == {"_graph_task": 3}
    # spectral: 10 weight layers, trained and random init; the first trained one was saved
    assert full["spectral"]["_spectrum_task"] == 20
    assert rerun["spectral"] == {**full["spectral"], "_spectrum_task": 19}
    for analysis in ANALYSES:
        assert _result(run, analysis) == _result(reference, analysis), analysis
    assert not (run / "results" / PARTIAL_DIR).exists()  # removed with the final JSON
    assert not list(run.rglob("*.tmp"))


# -- in-process crashes ----------------------------------------------------------------
class Crash(RuntimeError):
    """Stands for a job killed between two layers."""


@contextmanager
def crash_after(module_name: str, name: str, n: int) -> Iterator[list]:
    """Make ``module.name`` raise :class:`Crash` on its ``n + 1``-th call."""
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls: list = []

    def wrapper(*args, **kwargs):
        if len(calls) >= n:
            raise Crash(f"{name} call {len(calls) + 1}")
        calls.append(args[0])
        return original(*args, **kwargs)

    setattr(module, name, wrapper)
    try:
        yield calls
    finally:
        setattr(module, name, original)


@pytest.fixture
def saves(monkeypatch) -> list[str]:
    """The partial files written (by this process or by in-process Dask workers)."""
    written: list[str] = []
    original = Slot.save

    def record(self, text):
        written.append(str(Path(self.path).relative_to(Path(self.path).parents[2])))
        return original(self, text)

    monkeypatch.setattr(Slot, "save", record)
    return written


def _reference(run_dir: Path, analysis: str) -> dict:
    worker.run(analysis, run_dir)
    result = _result(run_dir, analysis)
    (run_dir / "results" / f"{analysis}.json").unlink()
    return result


@pytest.fixture(scope="module")
def address():
    """A two-worker cluster of threads in this process, reached over tcp:// (tasks and
    their Slot objects are pickled as for a remote cluster)."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_workers_save_their_layers_and_a_rerun_reuses_them(run, address, saves,
                                                                monkeypatch) -> None:
    """Crash after one finished layer; the rerun on Dask sends only the other layers, whose
    workers write their files; the results equal an uninterrupted run's."""
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.topology import run_topology

    expected = {a: _reference(run, a) for a in ("topology", "mapper")}
    saves.clear()
    with crash_after("deepprofile.topology.pipeline", "_persistence_layer", 1), \
            pytest.raises(Crash):
        worker.run("topology", run)
    with crash_after("deepprofile.mapper.pipeline", "_graph_task", 2), pytest.raises(Crash):
        worker.run("mapper", run)
    assert sorted(saves) == sorted(_partials(run)) and len(saves) == 3
    saves.clear()
    run_topology(run, n_points=30, quiet=True, metrics=("bottleneck",), cka=("linear",),
                 sensitivity_k=(0, 1), scheduler=address)
    run_mapper(run, quiet=True, intervals=6, thumbnails=False, merge=False, scheduler=address)
    assert sorted(s.split("/")[1] for s in saves) == ["graphs"] * 2 + ["persistence"] * 3 + [
        "sensitivity"] * 4
    assert sorted(s.split("/")[2].split(".")[0] for s in saves if "/graphs/" in s) == [
        "layer2", "layer3"]
    for analysis in ("topology", "mapper"):
        assert _result(run, analysis) == expected[analysis], analysis
    assert not (run / "results" / PARTIAL_DIR).exists()


def test_spectral_resumes_each_stage(run, saves) -> None:
    """A crash at the operator spectrum (every other layer saved) leaves only that to do."""
    expected = _reference(run, "spectral")
    saves.clear()
    with crash_after("deepprofile.spectral.pipeline", "_operator_task", 0), \
            pytest.raises(Crash):
        worker.run("spectral", run)
    stages = sorted({s.split("/")[1] for s in saves})
    assert stages == ["projections-forward", "projections-stored", "spectra-random-init",
                      "spectra-trained"]
    saves.clear()
    with crash_after("deepprofile.spectral.rmt", "_spectrum_task", 0), \
            crash_after("deepprofile.spectral.pipeline", "project_dataset", 0), \
            crash_after("deepprofile.spectral.pipeline", "_stored_projection_task", 0):
        worker.run("spectral", run)  # nothing but the operator spectrum may run
    assert [s.split("/")[1] for s in saves] == ["operator"]
    assert _result(run, "spectral") == expected


def test_damaged_partial_files_are_recomputed(run, saves) -> None:
    """Truncated, altered (checksum), non-UTF-8 and foreign-key files are ignored."""
    expected = _reference(run, "topology")
    with crash_after("deepprofile.topology.pipeline", "_persistence_layer", 4), \
            crash_after("deepprofile.topology.pipeline", "_sweep_layer", 0), \
            pytest.raises(Crash):
        worker.run("topology", run)
    folder = run / "results" / PARTIAL_DIR / "topology" / "persistence"
    files = {p.name.split(".")[0]: p for p in folder.glob("*.json")}
    assert sorted(files) == ["layer1", "layer2", "layer3", "stem"]
    text = files["stem"].read_text()
    files["stem"].write_text(text[: len(text) // 2])  # truncated
    head, _, body = files["layer1"].read_text().partition("\n")
    digit = next(i for i, c in enumerate(body) if c in "123456789")
    altered = body[:digit] + str(int(body[digit]) % 9 + 1) + body[digit + 1:]
    json.loads(altered)  # still valid JSON: only the checksum can tell
    files["layer1"].write_text(head + "\n" + altered)
    files["layer2"].write_bytes(b"\xff\xfe" + files["layer2"].read_bytes()[2:])
    saves.clear()
    worker.run("topology", run)
    persistence = sorted(s.split("/")[2].split(".")[0] for s in saves
                         if "/persistence/" in s)
    assert persistence == ["layer1", "layer2", "stem"]  # layer3 was reused
    assert _result(run, "topology") == expected


def test_other_settings_never_reuse_saved_layers(run, saves) -> None:
    from deepprofile.topology import run_topology

    with crash_after("deepprofile.topology.pipeline", "_persistence_layer", 2), \
            pytest.raises(Crash):
        worker.run("topology", run)
    saves.clear()
    run_topology(run, n_points=25, quiet=True, metrics=("bottleneck",), cka=("linear",),
                 sensitivity_k=(0, 1))
    assert sum("/persistence/" in s for s in saves) == 4
    assert not (run / "results" / PARTIAL_DIR).exists()  # the other settings' files too


def test_slot_round_trip_and_refusals(tmp_path) -> None:
    saved = LayerResults.in_results(tmp_path / "results", "demo")
    slot = saved.slot("stage", "layer/1", {"a": 1.5})
    assert slot.load() is None  # nothing saved yet
    slot.save('{"x": [1.0, NaN]}')
    assert slot.load() == '{"x": [1.0, NaN]}'
    assert saved.slot("stage", "layer/1", {"a": 2.5}).load() is None  # another key
    assert Slot(slot.path, slot.key.replace("1.5", "2.5")).load() is None  # same file
    assert LayerResults.in_results(None, "demo").slot("stage", "l", {}) is None
    assert saved.slot("stage", "l", None) is None  # inputs that cannot be identified
    saved.clear()
    assert not (tmp_path / "results" / PARTIAL_DIR).exists()


def test_resumed_run_says_so(run, capsys) -> None:
    from deepprofile.mapper.pipeline import run_mapper

    with crash_after("deepprofile.mapper.pipeline", "_graph_task", 1), pytest.raises(Crash):
        worker.run("mapper", run)
    run_mapper(run, intervals=6, thumbnails=False, merge=False)
    assert "mapper: reused the layers an interrupted run had finished (graphs 1 of 4)" in (
        capsys.readouterr().err)


def test_commands_keep_layers_beside_their_output(run, tmp_path, saves) -> None:
    """`deepprofile topology --out` and `deepprofile spectral -o` resume too: the layers
    wait in .partial/ beside the output file."""
    import typer
    from typer.testing import CliRunner

    from deepprofile.models import save_checkpoint
    from deepprofile.spectral.cli import register as register_spectral
    from deepprofile.topology.cli import register as register_topology

    app = typer.Typer()
    register_topology(app)
    register_spectral(app)
    ckpt = save_checkpoint(tmp_path / "m.pt", worker.build_model(), "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)}, num_classes=4)
    out = tmp_path / "out"
    commands = {
        "topology": ["topology", str(run), "--n-points", "30", "-m", "bottleneck", "--out",
                     str(out / "topology.json"), "-q"],
        "spectral": ["spectral", str(ckpt), "--store", str(run / "flat.zarr"), "--layers",
                     "layer2.branch.3", "-o", str(out / "spectral.json"), "-q"],
    }
    crashes = {"topology": ("deepprofile.topology.pipeline", "_persistence_layer"),
               "spectral": ("deepprofile.spectral.rmt", "_spectrum_task")}
    for name, args in commands.items():
        with crash_after(*crashes[name], 1):
            res = CliRunner().invoke(app, args)
        assert isinstance(res.exception, Crash), res.output
        assert len(list((out / PARTIAL_DIR / name).rglob("*.json"))) == 1
        saves.clear()
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert (out / f"{name}.json").is_file() and not (out / PARTIAL_DIR).exists()
        first = "persistence" if name == "topology" else "spectra-trained"
        assert sum(f"/{first}/" in s for s in saves) == (3 if name == "topology" else 9)


def test_layers_are_kept_by_the_command_when_workers_cannot_write(run, address,
                                                                  monkeypatch) -> None:
    """Workers without the run folder's file system (their saves fail here) still leave a
    resumable run: the command's process keeps each layer as its result arrives."""
    import threading

    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.rundir import RunDir

    expected = _reference(run, "mapper")
    original = Slot.save
    by_command: list[str] = []

    def save(self, text):
        if threading.current_thread() is not threading.main_thread():
            raise PermissionError(13, "Permission denied", self.path)  # a worker
        by_command.append(Path(self.path).name.split(".")[0])
        return original(self, text)

    def crash(self, name, result):
        raise Crash("killed before mapper.json")

    monkeypatch.setattr(Slot, "save", save)
    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "write_result", crash)
        with pytest.raises(Crash):
            run_mapper(run, quiet=True, intervals=6, thumbnails=False, merge=False,
                       scheduler=address)
    assert sorted(by_command) == ["layer1", "layer2", "layer3", "stem"]
    by_command.clear()
    with crash_after("deepprofile.mapper.pipeline", "_graph_task", 0):
        run_mapper(run, quiet=True, intervals=6, thumbnails=False, merge=False,
                   scheduler=address)  # every graph is read back, none computed
    assert by_command == [] and _result(run, "mapper") == expected


@pytest.mark.slow  # starts two worker processes that import torch: 15-30 s here
def test_worker_killed_after_saving_its_layer(run, tmp_path) -> None:
    """A worker process SIGKILLed right after writing its layer's file: Dask retries the
    task, which finds the file; mapper.json equals one process's."""
    distributed = pytest.importorskip("dask.distributed")
    from deepprofile.mapper.pipeline import run_mapper

    expected = _reference(run, "mapper")
    marker = tmp_path / "killed"
    patch = pytest.MonkeyPatch()
    patch.setenv(ENV_ONCE, f"layer-saved:{marker}")  # inherited by the workers only
    patch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            pids = set(client.run(os.getpid).values())
            patch.delenv(ENV_ONCE)  # this process saves no layer, but stays safe
            run_mapper(run, quiet=True, intervals=6, thumbnails=False, merge=False,
                       scheduler=cluster.scheduler_address)
            assert marker.exists() and int(marker.read_text()) in pids
    finally:
        patch.undo()
    assert _result(run, "mapper") == expected
    assert not (run / "results" / PARTIAL_DIR).exists()


def test_layers_that_cannot_be_kept_anywhere_cost_only_the_resume(run, address,
                                                                  monkeypatch) -> None:
    """Disk full (or no permission) under results/.partial in every process: the analyses
    still finish with the uninterrupted result, on Dask (the command's process tries to keep
    what the workers could not) and for spectral's layers saved together."""
    import errno

    from deepprofile.mapper.pipeline import run_mapper

    expected = {a: _reference(run, a) for a in ("mapper", "spectral")}

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("deepprofile.partial.write_text", full)
    run_mapper(run, quiet=True, intervals=6, thumbnails=False, merge=False, scheduler=address)
    worker.run("spectral", run)
    for analysis in ("mapper", "spectral"):
        assert _result(run, analysis) == expected[analysis], analysis
    assert not (run / "results" / PARTIAL_DIR).exists()
