"""Peak resident memory of a command and of every process it starts (Dask workers).

    python benchmarks/tree_rss.py [--interval 0.02] -- deepprofile capture ... --scheduler local:2

Runs the command, and every ``--interval`` seconds walks its process tree (psutil) and reads
each process's ``VmHWM`` (the kernel's own peak resident set size, so a short spike between
two samples is still counted) and its current RSS. Prints one JSON object: the wall time,
the exit code, and for each process its peak, the seconds it was first and last seen, and
its role:

* ``command``: the process started here;
* ``worker``: a ``multiprocessing`` spawn child of the command (a ``LocalCluster`` worker);
* ``resource_tracker``: multiprocessing's helper;
* ``other``: anything else, e.g. the short-lived fork a process makes to exec ``ldconfig``
  or ``uname`` (its pages are its parent's until the exec; left out of the totals).

Totals: the sum of the workers' peaks, and the peak of the summed current RSS of the
command, its workers and the tracker at any one sample (what the machine held at once;
sampled, so a lower bound; it counts pages shared between processes, such as the torch
libraries, once per process; ``--pss-every S`` adds their summed proportional set size,
sampled every S seconds, which splits them). Growth in a process's last ``--interval``
before it exits is missed; the kernel's ``ru_maxrss`` of the command
(``largest_process_mb``, what ``/usr/bin/time -v`` prints as ``Maximum resident set
size``) is the exact peak of the largest single process of the tree, but not the sum over
the workers, hence this script. The command's own output goes to stderr, so stdout holds
only the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import psutil


def _peak_kb(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` in kB (``None`` once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "command"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    try:
        direct = proc.ppid() == root
    except psutil.Error:
        direct = False
    if direct and ("spawn_main" in cmd or "forkserver" in cmd):
        return "worker"
    return "other"  # e.g. a worker's fork that is about to exec ldconfig or uname


def measure(command: list[str], interval: float = 0.02,
            pss_every: float | None = None) -> dict[str, Any]:
    """Run ``command`` (its stdout goes to stderr) and return its tree's peak memory (see
    the module docstring); ``pss_every`` seconds: also sample the tree's summed PSS."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=sys.stderr)
    pss_peak, pss_next = 0, start
    root = psutil.Process(child.pid)
    seen: dict[int, dict[str, Any]] = {}
    total_peak = 0
    rusage = None
    while True:
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        total = 0
        for proc in procs:
            now = round(time.perf_counter() - start, 2)
            info = seen.setdefault(proc.pid, {"pid": proc.pid, "role": "other", "name": "?",
                                              "peak_mb": 0.0, "seen_from_s": now})
            info["seen_until_s"] = now
            if info["role"] == "other":  # again: a spawned worker is a fork until it execs
                info["role"] = _role(proc, child.pid)
                try:
                    info["name"] = proc.name()
                except psutil.Error:
                    pass
            peak = _peak_kb(proc.pid)
            if peak is not None:
                info["peak_mb"] = max(info["peak_mb"], round(peak / 1024, 1))
            if info["role"] == "other":
                continue  # short-lived forks share their parent's pages until they exec
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        total_peak = max(total_peak, total)
        if pss_every is not None and time.perf_counter() >= pss_next:
            pss_peak = max(pss_peak, _tree_pss(
                [p for p in procs if seen[p.pid]["role"] != "other"]))
            pss_next = time.perf_counter() + pss_every
        time.sleep(interval)
    wall = time.perf_counter() - start
    processes = sorted(seen.values(), key=lambda p: (p["role"] != "command", p["pid"]))
    workers = [p["peak_mb"] for p in processes if p["role"] == "worker"]
    return {
        "command": command, "exit_code": child.returncode, "wall_s": round(wall, 1),
        "interval_s": interval,
        "command_peak_mb": next((p["peak_mb"] for p in processes if p["role"] == "command"),
                                None),
        "workers": len(workers), "worker_peaks_mb": workers,
        "workers_peak_sum_mb": round(sum(workers), 1),
        "tree_peak_total_mb": round(total_peak / 1024**2, 1),
        # the kernel's figure for the command (ru_maxrss of wait4): the largest single
        # process of the tree, as `/usr/bin/time -v` prints it
        "largest_process_mb": round(rusage.ru_maxrss / 1024, 1),
        "processes": processes,
        **({"pss_every_s": pss_every, "tree_pss_peak_mb": round(pss_peak / 1024**2, 1)}
           if pss_every is not None else {}),
    }


def _tree_pss(procs: list[psutil.Process]) -> int:
    """Summed proportional set size (shared pages split between their users), bytes."""
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--pss-every", type=float, default=None, metavar="SECONDS",
                        help="also sample the tree's summed PSS (costly: ~40 ms a process)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    result = measure(command, args.interval, args.pss_every)
    print(json.dumps(result, indent=1))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
