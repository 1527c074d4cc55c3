"""Local Dask workers started from the ``deepprofile`` console script do not re-run it
(issue 17 probe): multiprocessing's spawn re-runs the parent's main module in each worker,
and the script's only import, :mod:`deepprofile.cli`, pulls torch and every command into
every idle worker (594 MB instead of 63 MB measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import deepprofile
from deepprofile.distributed import _workers_skip_console_script

ROOT = str(Path(deepprofile.__file__).resolve().parents[1])

SCRIPT = textwrap.dedent("""\
    import json
    import sys
    from deepprofile.cli import main
    if __name__ == "__main__":
        from deepprofile.distributed import client_for

        def loaded():
            import sys
            return [m for m in ("deepprofile.cli", "torch", "typer") if m in sys.modules]

        with client_for("local:1") as client:
            print(json.dumps({"worker": list(client.run(loaded).values())[0],
                              "inside": sys.modules["__main__"].__spec__.name}))
        print(json.dumps({"after": sys.modules["__main__"].__spec__}))
""")


def test_workers_of_the_console_script_import_nothing_heavy(tmp_path):
    pytest.importorskip("dask.distributed")
    script = tmp_path / "deepprofile"  # the console script's name, as pip installs it
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert lines == [{"worker": [], "inside": "deepprofile.__main__"}, {"after": None}]


def test_other_main_modules_are_left_alone():
    """A user's script (here pytest's main module) keeps its own preparation: its workers
    may need what it defines."""
    main = sys.modules["__main__"]
    before = getattr(main, "__spec__", None)
    with _workers_skip_console_script():
        assert getattr(main, "__spec__", None) is before


def test_reading_stores_does_not_import_torch():
    """What the topology and mapper tasks import (a worker that ran one held 149-157 MB
    instead of 621-628 MB): deepprofile.capture's names load on first use."""
    code = ("import sys, deepprofile.distributed, deepprofile.capture.store, "
            "deepprofile.topology.pipeline, deepprofile.mapper.pipeline; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "from deepprofile.capture import ActivationStore, capture_to_store; "
            "assert 'torch' in sys.modules")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
