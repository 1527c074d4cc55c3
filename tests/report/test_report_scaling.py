"""Report items of issues 15 and 18: what a 54-layer run needs (size, pickers, captions that
follow the data) and small correctness fixes. Built from small synthetic results files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deepprofile.report import build_report
from deepprofile.rundir import RunDir


def _run_folder(tmp_path: Path, results: dict[str, object] | None = None,
                overview: dict[str, object] | None = None) -> Path:
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    rd = RunDir(run)
    rd.write_overview({"model": "m", "weights_hash": "abc", "n_samples": 4,
                       "command": "deepprofile capture m --out run", "date": "d0",
                       **(overview or {})})
    for name, data in (results or {}).items():
        (run / "results" / f"{name}.json").write_text(json.dumps(data))
    return run


def test_every_command_that_built_the_run_is_listed(tmp_path, monkeypatch, parse_page):
    run = _run_folder(tmp_path)
    rd = RunDir(run)
    monkeypatch.setattr(sys, "argv", ["deepprofile", "topology", str(run)])
    rd.write_result("topology_x", {"a": 1})
    monkeypatch.setattr(sys, "argv", ["deepprofile", "mapper", str(run), "--layer", "l3"])
    rd.write_result("mapper_x", {"a": 1})
    rd.write_result("mapper_y", {"a": 1})  # same command, second result: one entry
    commands = json.loads((run / "run.json").read_text())["commands"]
    assert [c["command"] for c in commands] == [
        "deepprofile capture m --out run", f"deepprofile topology {run}",
        f"deepprofile mapper {run} --layer l3"]
    assert commands[2]["results"] == ["mapper_x", "mapper_y"]
    html = build_report(run, tmp_path / "r.html").read_text()
    for c in commands:
        assert c["command"] in html
