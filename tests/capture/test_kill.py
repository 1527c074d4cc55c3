"""SIGKILL a capture at each crash point; the rerun must end byte-identical (arrays and
results) to an uninterrupted capture, with no leftovers (issue 16, items 6 and the kill test).

The capture runs as a subprocess that kills itself at a named point
(``DEEPPROFILE_TEST_KILL_AT``, see :mod:`deepprofile.testhooks`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepprofile
from deepprofile.capture import ActivationStore

WORKER = Path(__file__).with_name("kill_worker.py")
ROOT = str(Path(deepprofile.__file__).resolve().parents[1])


def _worker():
    spec = importlib.util.spec_from_file_location("kill_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spawn(run_dir: Path, seed: int, overwrite: bool, kill_at: str | None) -> int:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DEEPPROFILE_TEST_KILL_AT", None)
    if kill_at:
        env["DEEPPROFILE_TEST_KILL_AT"] = kill_at
    args = [sys.executable, str(WORKER), str(run_dir), str(seed)]
    proc = subprocess.run(args + (["--overwrite"] if overwrite else []), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, -9), proc.stderr[-2000:]
    return proc.returncode


def _arrays(run_dir: Path) -> dict[str, bytes]:
    store = ActivationStore.open(run_dir / "activations.zarr")
    return store.raw_arrays()


def _results(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text().replace(str(run_dir), "RUN")
            for p in sorted((run_dir / "results").glob("*.json"))}


def _leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*")
                  if p.name.endswith(".tmp") or ".creating-" in p.name or ".removing-" in p.name)


def _check(point: str, overwrite: bool, tmp_path: Path) -> None:
    worker = _worker()
    expected = tmp_path / "expected"
    worker.run(str(expected), 2, False)  # uninterrupted, in this process
    run_dir = tmp_path / f"killed-{point}"
    if overwrite:
        worker.run(str(run_dir), 1, False)  # an earlier capture with other weights
    assert _spawn(run_dir, 2, overwrite, point) == -9, f"no kill at {point}"
    assert _spawn(run_dir, 2, overwrite, None) == 0  # the user runs the same command again
    assert _arrays(run_dir) == _arrays(expected), point
    assert _results(run_dir) == _results(expected), point
    assert _leftovers(run_dir) == [], point
    stores = json.loads((run_dir / "run.json").read_text())["stores"]
    assert list(stores) == ["activations.zarr"]
    assert stores["activations.zarr"]["accuracy"] == json.loads(
        (expected / "run.json").read_text())["accuracy"]
    if overwrite:  # the earlier capture's results were moved aside, not mixed in
        # (a kill after the new results were written makes the rerun move those aside too)
        aside = [json.loads(p.read_text())["store_identity"]["weights_hash"]
                 for p in sorted(run_dir.glob("results.stale-*/capture.json"))]
        first = json.loads(_results(expected)["capture.json"])["store_identity"]
        assert len(aside) >= 1 and aside[0] != first["weights_hash"]


@pytest.mark.parametrize("point,overwrite", [("store-created", False),
                                             ("overwrite-removal", True)])
def test_kill_and_rerun_is_identical(point, overwrite, tmp_path):
    _check(point, overwrite, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("point,overwrite", [
    ("store-metadata", False), ("chunk-committed", False), ("results-write", False),
    ("run-json", False), ("store-created", True), ("store-metadata", True),
    ("chunk-committed", True), ("results-write", True), ("run-json", True)])
def test_kill_and_rerun_is_identical_everywhere(point, overwrite, tmp_path):
    _check(point, overwrite, tmp_path)
