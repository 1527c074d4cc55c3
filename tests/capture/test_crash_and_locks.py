"""Crash windows and concurrency (issue 16, items 6 and 7): leftovers of killed processes
are cleaned, stores appear only when complete, a run folder is locked, run.json merges."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.capture.runner import store_lock
from deepprofile.errors import DeepProfileError, RunLockedError
from deepprofile.results import clean_stale_temp, write_json
from deepprofile.rundir import RunDir
from deepprofile.workflow import capture_run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextmanager
def _held_elsewhere(path):
    """Hold the store lock of ``path`` from another thread (as another capture would)."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with store_lock(path):
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(30)
    try:
        yield
    finally:
        release.set()
        thread.join()


def _capture(net, dataset, path, **kw):
    return capture_to_store(net, dataset, ["conv2", "fc"], path, batch_size=10, chunk_size=20,
                            quiet=True, **kw)


def test_temp_files_of_dead_writers_are_cleaned(tmp_path, tiny_net, tiny_dataset):
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    dead = results / f".capture.json.{_dead_pid()}.abc123.tmp"
    alive = results / f".capture.json.{os.getppid()}.x.tmp"
    dead.write_text("{")
    alive.write_text("{")
    capture_run(tiny_net, tiny_dataset, tmp_path / "run", ["fc"], quiet=True)
    assert not dead.exists() and alive.exists()
    assert list(results.glob(".*.tmp")) == [alive]  # only the live writer's file is left
    assert clean_stale_temp(results) == []


def test_store_appears_only_complete_and_leftovers_go(tmp_path, tiny_net, tiny_dataset):
    path = tmp_path / "s.zarr"
    half = tmp_path / f".s.zarr.creating-{_dead_pid()}"
    half.mkdir()
    (half / "zarr.json").write_text("{}")  # a creation killed before its metadata
    aside = tmp_path / f".s.zarr.removing-{_dead_pid()}"
    aside.mkdir()
    store = _capture(tiny_net, tiny_dataset, path)
    assert store.is_complete and not half.exists() and not aside.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "s.zarr"]


def test_overwrite_renames_aside_before_deleting(tmp_path, tiny_net, tiny_dataset, monkeypatch):
    import shutil

    path = tmp_path / "s.zarr"
    _capture(tiny_net, tiny_dataset, path)
    seen = []
    real = shutil.rmtree

    def spy(target, *args, **kw):
        seen.append((str(target), path.exists()))
        return real(target, *args, **kw)

    monkeypatch.setattr(shutil, "rmtree", spy)
    _capture(tiny_net, tiny_dataset, path, overwrite=True, reductions="max")
    removals = [(t, live) for t, live in seen if ".s.zarr.removing-" in t]
    assert removals and not any(live for _, live in removals)  # renamed away first
    assert str(path) not in [t for t, _ in seen]  # the store itself is never deleted in place


def test_second_capture_of_a_locked_store_fails_cleanly(tmp_path, tiny_net, tiny_dataset):
    path = tmp_path / "s.zarr"
    with _held_elsewhere(path):
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            _capture(tiny_net, tiny_dataset, path)
    assert not path.exists()
    # a lock file left by a killed process (stale) does not block
    (tmp_path / ".s.zarr.lock").write_text(f"{_dead_pid()}\n")
    assert _capture(tiny_net, tiny_dataset, path).is_complete


def test_locked_store_leaves_the_run_untouched(tmp_path, tiny_net, tiny_dataset):
    run_dir = tmp_path / "run"
    capture_run(tiny_net, tiny_dataset, run_dir, ["fc"], quiet=True)
    before = sorted(p.name for p in run_dir.rglob("*"))
    with _held_elsewhere(run_dir / "activations.zarr"):  # a concurrent identical capture
        with pytest.raises(RunLockedError, match="activations.zarr is in use"):
            capture_run(tiny_net, tiny_dataset, run_dir, ["fc"], quiet=True, overwrite=True)
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing moved aside
    with pytest.raises(DeepProfileError, match="is a file"):
        capture_run(tiny_net, tiny_dataset, run_dir / "run.json", ["fc"], quiet=True)


def test_concurrent_captures_keep_both_run_json_entries(tmp_path, tiny_net, tiny_dataset,
                                                        monkeypatch):
    run_dir = tmp_path / "run"
    real = RunDir.read_overview

    def slow_read(self):  # widen the read-modify-write window
        data = real(self)
        time.sleep(0.3)
        return data

    monkeypatch.setattr(RunDir, "read_overview", slow_read)
    write_json(run_dir / "run.json", {"stores": {}})
    errors = []

    def work(name):
        net = copy.deepcopy(tiny_net)  # hooks are per model: one model per thread
        try:
            capture_run(net, tiny_dataset, run_dir, ["fc"], store_name=name, quiet=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a.zarr", "b.zarr")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stores = RunDir(run_dir).read_overview()["stores"]
    assert sorted(stores) == ["a.zarr", "b.zarr"]
    assert ActivationStore.open(run_dir / "a.zarr").is_complete
