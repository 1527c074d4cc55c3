"""``report --strict`` fails on a results file it cannot read; without it, a note says the
file was skipped and the report is still written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepprofile.errors import DeepProfileError
from deepprofile.report import build_report


def _run(tmp_path: Path, name: str, content: bytes) -> Path:
    """A minimal run folder: run.json, one valid result, one damaged result."""
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": "m"}))
    (run / "results" / "other.json").write_text(json.dumps({"x": 1}))
    (run / "results" / name).write_bytes(content)
    return run


DAMAGED = [("topology.json", b"{not json"), ("mapper.json", b""),
           ("unknown_analysis.json", b"\xff\xfe\x00")]


@pytest.mark.parametrize("name,content", DAMAGED)
def test_strict_report_exits_2_naming_the_file(tmp_path, name, content):
    from deepprofile.cli import app

    run = _run(tmp_path, name, content)
    result = CliRunner().invoke(app, ["report", str(run), "--strict"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output
    assert not (run / "report.html").exists()


@pytest.mark.parametrize("name,content", DAMAGED)
def test_report_without_strict_notes_the_skipped_file(tmp_path, name, content):
    run = _run(tmp_path, name, content)
    html = build_report(run).read_text()
    assert f"Skipped {name}" in html


def test_unreadable_results_file(tmp_path):
    """A results path that cannot be read as a file (here a folder: works as root too)."""
    run = _run(tmp_path, "other.json", b"{}")
    (run / "results" / "spectral.json").mkdir()
    with pytest.raises(DeepProfileError, match="spectral.json cannot be read"):
        build_report(run, strict=True)
    assert "Skipped spectral.json" in build_report(run).read_text()
