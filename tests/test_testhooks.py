"""The kill-once fault-injection hook: exactly one process dies at the point, and the
variable reaches Dask worker processes started after it was set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepprofile
from deepprofile.testhooks import ENV_ONCE

ROOT = str(Path(deepprofile.__file__).resolve().parents[1])
CODE = "from deepprofile.testhooks import kill_point; kill_point({!r}); print('alive')"


def _run(point: str, once: str) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV_ONCE: once,
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", CODE.format(point)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_kill_once_kills_only_the_first_process_at_the_point(tmp_path):
    marker = tmp_path / "killed"
    other = _run("elsewhere", f"here:{marker}")  # another point: no death, no marker
    assert other.returncode == 0 and other.stdout.strip() == "alive"
    assert not marker.exists()
    first = _run("here", f"here:{marker}")
    assert first.returncode == -9, first.stderr
    assert marker.read_text().strip().isdigit()
    second = _run("here", f"here:{marker}")
    assert second.returncode == 0 and second.stdout.strip() == "alive"
    marker.unlink()  # re-armed: the next arrival at any listed point dies
    assert _run("there", f"here,there:{marker}").returncode == -9


@pytest.mark.slow
def test_kill_once_reaches_local_cluster_workers_and_dask_retries(tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    marker = tmp_path / "killed"
    monkeypatch.setenv(ENV_ONCE, f"probe:{marker}")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def probe(i: int) -> int:
        from deepprofile.testhooks import kill_point

        kill_point("probe")
        return os.getpid()

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
        pids = client.gather([client.submit(probe, i, pure=False) for i in range(4)])
    killed = int(marker.read_text())
    assert killed in workers and killed != os.getpid()  # a worker died, not this process
    assert killed not in pids  # every task finished, none of them in the killed process
