"""benchmarks/tree_rss.py: the peaks it reports for a command and a worker it spawns cover
what each of them allocated (known sizes), and the worker is told apart from the command."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tree_rss.py"
if not Path("/proc/self/status").exists():
    pytest.skip("reads /proc (Linux)", allow_module_level=True)

CHILD = ("import multiprocessing as mp, time\n"
         "if __name__ == '__main__':\n"
         "    mp.set_start_method('spawn')\n"
         "    big = b'x' * (200 * 2**20)\n"  # 200 MiB written in the command itself
         "    p = mp.Process(target=exec, args=(\"b = b'y' * (120 * 2**20); "
         "import time; time.sleep(0.6)\",))\n"
         "    p.start(); p.join(); time.sleep(0.2)\n")


def test_peaks_of_the_command_and_its_spawned_worker():
    spec = importlib.util.spec_from_file_location("tree_rss", SCRIPT)
    tree_rss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tree_rss)
    got = tree_rss.measure([sys.executable, "-c", CHILD], interval=0.02)
    assert got["exit_code"] == 0 and got["workers"] == 1
    assert 200 <= got["command_peak_mb"] < 200 + 150
    assert 120 <= got["worker_peaks_mb"][0] < 120 + 100  # a fresh interpreter + 120 MiB
    assert got["tree_peak_total_mb"] >= 320  # both held their bytes at once
    assert got["largest_process_mb"] >= got["command_peak_mb"]
