"""run_spectral end to end on a tiny SmallResNet, JSON round trip, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from deepprofile.capture import hook_count
from deepprofile.data import ArrayDataset
from deepprofile.models.small import SmallResNet
from deepprofile.rundir import RunDir
from deepprofile.spectral.pipeline import (
    SpectralResult,
    projection_layers,
    run_spectral,
    summarize_spectral,
)

KW = {"in_channels": 1, "widths": [4, 8, 16]}


def _model() -> SmallResNet:
    torch.manual_seed(0)
    return SmallResNet(num_classes=3, in_channels=1, widths=(4, 8, 16)).eval()


def _data(n: int = 24) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randn(n, 1, 32, 32, generator=gen), torch.arange(n) % 3,
                        class_names=["zero", "one", "two"], name="noise")


def test_projection_layer_choice():
    model = _model()
    assert projection_layers(model, ["stem", "layer1", "layer2", "layer3"]) == [
        "stem.0", "layer1.branch.3", "layer2.branch.3", "layer3.branch.3"]
    picks = projection_layers(model, None, max_layers=3)
    assert len(picks) == 3 and picks[0] == "stem.0" and picks[-1] == "layer3.branch.3"
    assert projection_layers(model, "layer2.shortcut.0") == ["layer2.shortcut.0"]


def test_run_spectral_writes_result_that_round_trips(tmp_path):
    model = _model()
    result = run_spectral(model, tmp_path, _data(), ["layer1", "layer3"], seed=1, quiet=True)
    assert hook_count(model) == 0 and not model.training
    assert len(result.trained.layers) == 10 and len(result.random_init.layers) == 10
    assert list(result.projections) == ["layer1.branch.3", "layer3.branch.3"]
    hg = result.hypergraphs["layer3.branch.3"]
    assert hg.classes == ("zero", "one", "two") and len(hg.vertices) == 16
    assert result.operator["layer1.branch.3"]["input_size"] == [32, 32]
    assert result.operator["layer3.branch.3"]["n_singular_values"] == 16 * 8 * 8
    data = RunDir(tmp_path).read_result("spectral")
    back = SpectralResult.from_dict(data)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(data, sort_keys=True)
    assert data["dataset"]["name"] == "noise" and data["parameters"]["seed"] == 1
    text = summarize_spectral(back)
    assert "alpha-hat" in text and "random init" in text
    assert "layer1.branch.3" in text and "layer3.branch.3" in text


def test_run_spectral_without_dataset_skips_projections():
    result = run_spectral(_model(), None, layers=None, quiet=True, compare_random_init=False)
    assert result.projections == {} and result.random_init is None
    assert "Class hypergraphs" not in summarize_spectral(result)


@pytest.fixture
def cli() -> typer.Typer:
    from deepprofile.spectral.cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in multi-command mode
        pass

    return app


def test_cli_on_checkpoint_and_run_folder(tmp_path, cli):
    from deepprofile.models import save_checkpoint
    from deepprofile.workflow import capture_run

    model = _model()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, "small_resnet", KW, num_classes=3)
    run = tmp_path / "run"
    capture_run(model, _data(), run, ["layer1", "layer2.branch.3"],
                reductions={"layer1": "mean", "layer2.branch.3": "flatten"}, quiet=True)
    runner = CliRunner()
    res = runner.invoke(cli, ["spectral", str(ckpt), "--run", str(run), "--layers",
                              "layer2.branch.3", "-q"])
    assert res.exit_code == 0, res.output
    data = json.loads((run / "results" / "spectral.json").read_text())
    assert list(data["projections"]) == ["layer2.branch.3"]
    assert data["parameters"]["projection_sources"]["layer2.branch.3"].startswith("store")
    assert data["model_info"]["arch"] == "small_resnet"
    # a layer not stored as full maps needs the images: the "noise" dataset cannot be
    # rebuilt from its spec, which is a clear error
    res = runner.invoke(cli, ["spectral", str(ckpt), "--run", str(run), "--layers", "layer1",
                              "-q"])
    assert res.exit_code != 0
    from deepprofile.errors import DeepProfileError

    assert isinstance(res.exception, DeepProfileError)
    assert "pass the dataset" in str(res.exception)
    # weights only, no projections, explicit output
    out = tmp_path / "w.json"
    res = runner.invoke(cli, ["spectral", str(ckpt), "--no-random-init", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "alpha-hat" in res.output
    assert json.loads(out.read_text())["random_init"] is None


def test_cli_errors_are_deepprofile_errors(tmp_path, cli):
    from deepprofile.errors import DeepProfileError, UnknownLayerError
    from deepprofile.models import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", _model(), "small_resnet", KW, num_classes=3)
    runner = CliRunner()
    res = runner.invoke(cli, ["spectral", str(ckpt), "--weight-layers", "layer9", "-q"])
    assert isinstance(res.exception, UnknownLayerError)
    res = runner.invoke(cli, ["spectral", str(ckpt), "--weight-layers", "stem.1", "-q"])
    assert isinstance(res.exception, DeepProfileError) and "BatchNorm2d" in str(res.exception)
    res = runner.invoke(cli, ["spectral", str(ckpt), "--run", str(tmp_path / "none"), "-q"])
    assert isinstance(res.exception, DeepProfileError) and "is not a folder" in str(
        res.exception)
