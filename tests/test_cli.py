"""The command line: version, layers, capture, errors shown as one clean line."""

from __future__ import annotations

import subprocess
import sys

import torch
from typer.testing import CliRunner

from deepprofile import __version__
from deepprofile.capture import ActivationStore
from deepprofile.cli import app
from deepprofile.models import SmallResNet, save_checkpoint
from deepprofile.rundir import RunDir

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_layers_lists_paths_with_shapes():
    result = runner.invoke(app, ["layers", "resnet18", "--num-classes", "5", "--input-size",
                                 "3", "64", "64", "--filter", "layer*"])
    assert result.exit_code == 0, result.output
    assert "layer4" in result.output and "512x2x2" in result.output


def test_capture_writes_store_and_overview(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", SmallResNet(in_channels=1), "small_resnet",
                           {"in_channels": 1})
    run_dir = tmp_path / "run"
    args = ["capture", str(ckpt), "--out", str(run_dir), "--limit", "40", "--layer", "layer*",
            "--reduction", "max_position", "--batch-size", "16", "--device", "cpu", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(run_dir / "activations.zarr")
    assert store.layers == ["layer1", "layer2", "layer3"] and store.n_samples == 40
    overview = RunDir(run_dir).read_overview()
    assert overview["checkpoint"].endswith("m.pt") and overview["n_samples"] == 40
    assert overview["dataset"]["name"] == "digits"


def test_errors_are_one_clean_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deepprofile.cli", "capture", str(tmp_path / "missing.pt"),
         "--out", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "deepprofile.cli", "layers", "small_resnet", "--input-size",
         "1", "32", "32", "--filter", "layr*"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "matches no module" in proc.stderr
