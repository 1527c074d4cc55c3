"""Fault injection for crash tests: die with SIGKILL at a named point of a run.

``DEEPPROFILE_TEST_KILL_AT=<point>`` (one name, or several separated by commas): the
process kills itself, without any cleanup, the first time it reaches that point. The
kill tests in ``tests/capture/test_kill.py`` use it to show that a rerun after a crash
at any of these points ends byte-identical to an uninterrupted run.

``DEEPPROFILE_TEST_KILL_ONCE=<point>[,<point>...]:<marker file>``: the first process (of
all that inherit the variable, e.g. the worker processes of a Dask ``LocalCluster`` started
after it was set) to reach one of the points creates the marker file (``O_CREAT | O_EXCL``,
so only one process can) and kills itself; every later arrival, in any process, carries
on. The worker-kill tests use it to show that Dask retries the lost task on another worker
and the run ends identical to one process. The marker holds the killed process's id;
deleting it arms the hook again. Never use it with in-process (``processes=False``)
workers, nor with a point the calling process reaches itself: it would kill the caller.

Points: ``store-created`` (temporary store folder made, metadata not yet written),
``store-metadata`` (metadata written, store not yet renamed into place),
``overwrite-removal`` (old store renamed aside, not yet deleted), ``chunk-committed``
(first chunk committed), ``results-write`` (a result's temporary file written, not
yet renamed), ``run-json`` (capture results written, run.json not yet merged),
``capture-task`` (a Dask capture task started, nothing written yet), ``layer-task``
(a per-layer Dask task of :func:`deepprofile.distributed.map_layers` started) and
``layer-saved`` (a finished layer of topology, mapper or spectral written to
``results/.partial``, see :mod:`deepprofile.partial`; reached wherever the layer ran).
"""

from __future__ import annotations

import os
import signal

ENV = "DEEPPROFILE_TEST_KILL_AT"
ENV_ONCE = "DEEPPROFILE_TEST_KILL_ONCE"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``name`` is one of the points named in ``ENV``, or if it is
    the ``ENV_ONCE`` point and no process has died there yet (its marker file is absent)."""
    wanted = os.environ.get(ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    once = os.environ.get(ENV_ONCE)
    if once:
        points, _, marker = once.partition(":")
        if name in points.split(",") and marker and _claim(marker):
            os.kill(os.getpid(), signal.SIGKILL)


def _claim(marker: str) -> bool:
    """Create ``marker`` atomically; ``False`` when it exists (another process died already)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
