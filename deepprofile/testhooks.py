"""Fault injection for crash tests: die with SIGKILL at a named point of a capture.

Set ``DEEPPROFILE_TEST_KILL_AT=<point>`` (one name, or several separated by commas)
and the process kills itself, without any cleanup, the first time it reaches that
point. The kill tests in ``tests/capture/test_kill.py`` use it to show that a rerun
after a crash at any of these points ends byte-identical to an uninterrupted run.
Points: ``store-created`` (temporary store folder made, metadata not yet written),
``store-metadata`` (metadata written, store not yet renamed into place),
``overwrite-removal`` (old store renamed aside, not yet deleted), ``chunk-committed``
(first chunk committed), ``results-write`` (a result's temporary file written, not
yet renamed) and ``run-json`` (capture results written, run.json not yet merged).
"""

from __future__ import annotations

import os
import signal

ENV = "DEEPPROFILE_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``name`` is one of the points named in the environment."""
    wanted = os.environ.get(ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
