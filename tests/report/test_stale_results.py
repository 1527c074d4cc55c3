"""The report refuses results computed from an earlier capture of the run's store."""

from __future__ import annotations

import shutil

import torch

from deepprofile.report.context import ReportContext
from deepprofile.rundir import RunDir
from deepprofile.workflow import capture_run


def test_report_refuses_stale_results_and_keeps_current_ones(tiny_net, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    kw = dict(batch_size=25, chunk_size=25, quiet=True)
    capture_run(tiny_net, tiny_dataset, run_dir, ["fc"], **kw)
    rd = RunDir(run_dir)
    rd.write_result("topology", {"layers": ["fc"]})
    fresh = ReportContext(run_dir, run_dir)
    assert fresh.result("topology") == rd.read_result("topology") and fresh.notes == []

    with torch.no_grad():
        tiny_net.fc.weight.mul_(-1.0)
    capture_run(tiny_net, tiny_dataset, run_dir, ["fc"], overwrite=True, **kw)
    (stale,) = run_dir.glob("results.stale-*/topology.json")
    shutil.copy(stale, rd.result_path("topology"))  # e.g. restored by hand
    ctx = ReportContext(run_dir, run_dir)
    assert ctx.result("topology") is None
    assert ctx.result("capture") is not None
    assert len(ctx.notes) == 1 and "earlier capture of activations.zarr" in ctx.notes[0]
