"""run_attribution end to end on a tiny run folder, and the `attribute` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from deepprofile.attribution.cli import register
from deepprofile.attribution.pipeline import (
    AttributionResult,
    node_members_from_mapper,
    run_attribution,
    summarize_attribution,
)
from deepprofile.attribution.store import read_array, read_map
from deepprofile.errors import DeepProfileError
from deepprofile.rundir import RunDir

from .conftest import make_run

FAST = {"n_images": 4, "sigmas": (0.0, 0.3), "n_draws": 2, "n_steps": 4, "robust_images": 2,
        "sensitivity_samples": 1, "sensitivity_images": 1, "accuracy_images": 16,
        "n_reference": 40, "n_examples": 2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder: a tiny SmallResNet checkpoint, 30 captured digits, run.json."""
    return make_run(tmp_path_factory.mktemp("attr_run"))


def test_run_attribution_writes_results(run_dir):
    path, model, dataset = run_dir
    members = {"n0": [0, 1, 2], "n1": [3, 4, 25], "n2": []}
    res = run_attribution(model, path, dataset, quiet=True, node_members=members,
                          node_layer="layer2", **FAST)
    # images come from the store rows, spread evenly
    assert res.images["store_rows"] == [0, 10, 19, 29]
    assert res.checks["sigma0_equals_plain"] is True
    keys = set(res.methods)
    assert {"ig", "saliency", "smoothgrad", "gradient_shap", "sde_ig:0.3", "big"} <= keys
    assert any(k.startswith("gradcam:") for k in keys)
    assert res.methods["sde_ig:0.3"]["sde"]["sigma"] == 0.3
    assert [r["sigma"] for r in res.noisy_accuracy] == [0.0, 0.3]
    assert {r["method"] for r in res.robustness["table"]} == {"ig", "smoothgrad", "sde_ig:0.3",
                                                              "big"}
    assert res.alignment["ig"]["baseline"] == pytest.approx(np.sqrt(res.alignment["ig"]["dim"]
                                                                    / 1024))
    assert res.nodes["nodes"]["n1"]["n_explained"] == 3 and res.nodes["layer"] == "layer2"
    assert res.nodes["nodes"]["n2"]["n_members"] == 0
    # maps in attribution.zarr beside the JSON, referenced relatively
    stored = RunDir(path).read_result("attribution")
    ig = read_map(path, stored, "ig")
    assert ig.shape == (4, 1, 32, 32)
    assert read_map(path, stored, "sde_ig:0.3", variance=True).shape == ig.shape
    assert read_array(path, stored, stored["nodes"]["array"]).shape[0] == 2
    assert read_array(path, stored, stored["files"]["images"]).shape == (4, 1, 32, 32)
    grid = stored["examples"]
    assert len(grid["images"]) == 2 and np.asarray(grid["saliency"]["ig"]).shape == (2, 32, 32)
    back = AttributionResult.from_dict(stored)
    assert back.robustness_table() == res.robustness_table()
    text = summarize_attribution(back)
    assert "BIG" in text and "robustness" in text and "per-node" in text


def test_node_members_from_mapper_json(run_dir):
    path, _, _ = run_dir
    RunDir(path).write_result("mapper", {"layers": {"layer1": {
        "nodes": [{"id": "c0", "members": [0, 1, 3]}, {"id": "c1", "members": [2]}],
        "point_sample": [5, 5, 7, 8],
    }}})
    assert node_members_from_mapper(path, "layer1") == {"c0": [5, 8], "c1": [7]}
    with pytest.raises(DeepProfileError, match="no graph for layer 'layer9'"):
        node_members_from_mapper(path, "layer9")


def test_cli_attribute(run_dir, tmp_path):
    path, _, _ = run_dir
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command, so typer keeps `attribute` as a subcommand
        pass

    members = tmp_path / "members.json"
    members.write_text(json.dumps({"a": [1, 2], "b": [3]}))
    result = CliRunner().invoke(app, [
        "attribute", str(path), "--method", "ig", "--sde-sigma", "0.2", "--n-draws", "2",
        "--n-images", "3", "--n-steps", "4", "--robust-images", "2", "--node-members",
        str(members), "--node-layer", "layer1", "--alignment-layer", "layer1", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    stored = RunDir(path).read_result("attribution")
    assert stored["params"]["sigmas"] == [0.0, 0.2] and stored["params"]["n_draws"] == 2
    assert set(stored["nodes"]["nodes"]) == {"a", "b"}
    assert stored["model"]["arch"] == "small_resnet"
    layer_al = stored["alignment"]["layer_ig:layer1"]
    assert layer_al["space"] == "layer:layer1" and layer_al["n_features"] == 4 * 32 * 32
    assert 0 <= layer_al["mean"] <= 1


def test_cli_reports_a_missing_run(tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["attribute", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert isinstance(result.exception, DeepProfileError)
    assert "capture" in str(result.exception)


def test_cli_rejects_a_bad_memory_budget(tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["attribute", str(tmp_path), "--memory-budget", "lots"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DeepProfileError)
    assert "memory budget" in str(result.exception)
