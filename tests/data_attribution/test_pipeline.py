"""run_data_attribution and the CLI on a tiny digits model: results, concepts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprofile.cli import app
from deepprofile.data import ArrayDataset, load_dataset
from deepprofile.data_attribution.outputs import ConceptProbeOutput, params_up_to, run_to_layer
from deepprofile.data_attribution.pipeline import find_checkpoints, run_data_attribution
from deepprofile.data_attribution.results import DataAttributionResult
from deepprofile.data_attribution.trak import DEFAULT_RIDGE, DataAttributionError
from deepprofile.errors import UnknownConceptError
from deepprofile.rundir import RunDir


def _snapshot(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_predictions_and_concept(digits_run):
    run = digits_run["run"]
    assert len(find_checkpoints(run)) == 2
    res = run_data_attribution(run, targets=["predictions", "concept:odd"], proj_dim=64,
                               n_targets=6, k=5, quiet=True)
    back = DataAttributionResult.from_dict(RunDir(run).read_result("data_attribution"))
    assert back.to_dict() == DataAttributionResult.from_dict(res.to_dict()).to_dict()
    assert len(res.checkpoints) == 2 and res.proj_dim == 64 and res.seeds == (0,)
    assert res.ridge == back.ridge == DEFAULT_RIDGE and res.lambda_reg == 0.0
    assert all(len(c["sha256"]) == 16 for c in res.checkpoints)
    scores = np.load(run / res.scores_files["predictions"])
    assert scores.shape == (1257, 6) and np.isfinite(scores).all()
    pred = [t for t in res.targets if t.kind == "prediction"]
    assert len(pred) == 6
    top = pred[0].helpful
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)
    assert top[0].score == pytest.approx(float(scores[:, 0].max()), rel=1e-5)
    concept = [t for t in res.targets if t.kind == "concept"][0]
    # the concept scope is the conv only: fc never feeds the probed layer
    assert concept.detail["n_scope_params"] == 2
    cscores = np.load(run / res.scores_files["concept:odd"])
    assert cscores.shape == (1257, 1) and np.abs(cscores).max() > 0
    # second call: features are reused from the store (same numbers)
    again = run_data_attribution(run, targets=["predictions"], proj_dim=64, n_targets=6, k=5,
                                 quiet=True)
    np.testing.assert_allclose(np.load(run / again.scores_files["predictions"]), scores,
                               rtol=1e-5)


def test_concept_output_gradient_and_hooks(digits_run):
    from deepprofile.capture.hooks import hook_count
    from deepprofile.models import load_model

    model, _ = load_model(digits_run["result"].final_checkpoint)
    x = load_dataset("digits", split="test")[0][0].unsqueeze(0)
    assert params_up_to(model, "act", x) == ["conv.weight", "conv.bias"]
    out = ConceptProbeOutput("act", "mean", np.ones(4), 0.5)
    expected = model.act(model.conv(x)).mean(dim=(2, 3)).sum() + 0.5
    expected = expected.detach()
    got = float(out.logit(model, None, None, x).detach())
    assert got == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(RuntimeError, match="boom"):
        def bad(*a):
            raise RuntimeError("boom")
        model.conv.register_forward_pre_hook(bad)
        try:
            run_to_layer(model, "act", None, None, x)
        finally:
            model.conv._forward_pre_hooks.clear()
    assert hook_count(model) == 0


def test_bad_input_leaves_run_untouched(digits_run, tmp_path):
    run = digits_run["run"]
    before = _snapshot(run)
    with pytest.raises(DataAttributionError, match="below 1257"):
        run_data_attribution(run, proj_dim=1257, ridge=0.0, quiet=True)
    with pytest.raises(UnknownConceptError, match="odd"):
        run_data_attribution(run, targets=["concept:od"], proj_dim=64, quiet=True)
    wrong_size = ArrayDataset(torch.zeros(20, 3, 8, 8), torch.zeros(20, dtype=torch.long))
    with pytest.raises(DataAttributionError, match="--train-data"):
        run_data_attribution(run, train_set=wrong_size, proj_dim=8, quiet=True)
    many = ArrayDataset(torch.zeros(20, 1, 32, 32), torch.arange(20))
    with pytest.raises(DataAttributionError, match="10 classes"):
        run_data_attribution(run, train_set=many, proj_dim=8, quiet=True)
    assert _snapshot(run) == before
    other = RunDir(tmp_path / "other")
    other.write_overview({**RunDir(run).read_overview(),
                          "checkpoint": str(tmp_path / "empty" / "final.pt")})
    with pytest.raises(DataAttributionError, match="No training checkpoints"):
        run_data_attribution(other.path, quiet=True)
    assert _snapshot(other.path) == ["run.json"]


def test_cli_one_line_errors_and_single_checkpoint_warning(digits_run):
    run = digits_run["run"]
    res = CliRunner().invoke(app, ["data-attribution", str(run), "--proj-dim", "5000",
                                   "--ridge", "0", "-q"])
    assert res.exit_code == 2 and "below 1257" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    ok = CliRunner().invoke(app, ["data-attribution", str(run), "--proj-dim", "64",
                                  "--n-targets", "2", "--k", "3", "-q", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert "TRAK over 2 checkpoint(s)" in ok.output
    first = digits_run["result"].checkpoints[0]
    with pytest.warns(UserWarning, match="one checkpoint"):
        single = run_data_attribution(run, checkpoints=[first], proj_dim=64, n_targets=2,
                                      quiet=True)
    assert single.warnings and len(single.checkpoints) == 1


def test_compare_top_images_between_runs(digits_run, tmp_path):
    import shutil

    from deepprofile.data_attribution.compare import compare_data_attribution

    run = digits_run["run"]
    run_data_attribution(run, targets=["predictions", "concept:odd"], proj_dim=64,
                         n_targets=6, k=5, quiet=True)
    same = compare_data_attribution(run, run)
    assert same["same_training_set"] and same["targets"]
    for row in same["targets"]:
        assert row["helpful_jaccard"] == 1.0 and row["harmful_jaccard"] == 1.0
    concept = [r for r in same["targets"] if r["kind"] == "concept"][0]
    assert concept["score_spearman"] == pytest.approx(1.0)
    other = tmp_path / "other"
    shutil.copytree(run / "results", other / "results")
    shutil.copytree(run / "data_attribution", other / "data_attribution")
    data = RunDir(other).read_result("data_attribution")
    data["n_train"] = 5
    RunDir(other).write_result("data_attribution", data)
    assert compare_data_attribution(run, other) == {"same_training_set": False, "targets": []}
    assert compare_data_attribution(run, tmp_path / "none") is None


def test_report_section_with_thumbnails(digits_run, tmp_path):
    from deepprofile.report import build_report

    run = digits_run["run"]
    run_data_attribution(run, targets=["predictions", "concept:odd"], proj_dim=64,
                         n_targets=4, k=3, quiet=True)
    html = build_report(run, tmp_path / "report.html", strict=True).read_text()
    assert "Data attribution (TRAK)" in html
    assert "Most helpful and most harmful training images" in html
    assert html.count("data:image/png;base64,") >= 6
    assert "precision@k" not in html or "lift" in html


@pytest.mark.parametrize("args", [["--proj-dim", "0"], ["--n-targets", "0"], ["--k", "-1"],
                                  ["--lambda-reg", "nan"], ["--lambda-reg", "-1"],
                                  ["--ridge", "-0.5"], ["--ridge", "nan"],
                                  ["--batch-size", "0"]])
def test_out_of_range_options_are_one_line_and_write_nothing(digits_run, args):
    run = digits_run["run"]
    before = _snapshot(run)
    res = CliRunner().invoke(app, ["data-attribution", str(run), "-q", *args])
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert _snapshot(run) == before


def test_cli_ridge_default_is_the_engines():
    """The CLI spells the default ridge as a literal (no torch import at startup)."""
    import inspect

    cmd = next(c for c in app.registered_commands if c.name == "data-attribution")
    assert inspect.signature(cmd.callback).parameters["ridge"].default == DEFAULT_RIDGE
