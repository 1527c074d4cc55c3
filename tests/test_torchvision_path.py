"""Every command on a torchvision architecture from a plain state_dict and an ImageFolder.

resnet18 with 4 classes and random weights, saved as a bare state_dict (no architecture,
no class count inside), on a 16-image folder at 32 px: the architecture is given once at
capture (``--arch``; the class count is read from ``fc.weight``) and every later command
takes both from run.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprofile.cli import app
from deepprofile.models import build_model

pytestmark = pytest.mark.slow
runner = CliRunner()
CLASSES = ["ant", "bee", "cat", "dog"]


def ok(args: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("tv")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for j in range(4):
            pixels = rng.integers(0, 80, size=(40, 40, 3)) + 40 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name / f"{j}.png")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        torch.save(build_model("resnet18", num_classes=4).state_dict(), root / name)
    return root


def test_every_command_on_a_plain_resnet18_state_dict(world):
    w = world
    common = ["--data", "folder", "--data-root", w / "images", "--image-size", "32",
              "--device", "cpu", "-q"]
    assert "layer4" in ok(["layers", w / "a.pt", "--arch", "resnet18", "--input-size",
                           "3", "32", "32"])
    for name, run in (("a.pt", "runA"), ("b.pt", "runB")):
        ok(["capture", w / name, "--arch", "resnet18", *common, "--layer", "layer*",
            "--out", w / run])
        ok(["capture", w / name, "--arch", "resnet18", *common, "--layer", "layer*",
            "--reduction", "max_position", "--store-name", "activations_maxpos.zarr",
            "--out", w / run])
    overview = json.loads((w / "runA" / "run.json").read_text())
    assert overview["model_info"]["arch"] == "resnet18"
    assert overview["model_info"]["num_classes"] == 4  # read from fc.weight
    assert "warning" in overview["class_order"]  # a plain state_dict has no class names

    ok(["topology", w / "runA", "--n-points", "16", "--metric", "sliced_wasserstein", "-q"])
    ok(["topology", "--compare", w / "runA", w / "runB", "--n-points", "16", "-q"])
    ok(["mapper", w / "runA", "--layer", "layer4", "--intervals", "4", "-q"])
    ok(["spectral", w / "a.pt", "--run", w / "runA", "--no-random-init", "-q"])
    text = ok(["attribute", w / "runA", "--preset", "quick", "--n-images", "2", "--n-steps",
               "2", "--n-draws", "2", "--no-alignment", "--device", "cpu"])
    assert "BIG: skipped" in text and "robustness: skipped" in text
    ok(["report", w / "runA", "-o", w / "runA" / "report.html"])
    ok(["compare", w / "runA", w / "runB", "--out", w / "cmp", "-k", "4", "--n-points", "16",
        "-q"])
    result = json.loads((w / "cmp" / "results" / "compare.json").read_text())
    assert result["principal_angles"]["layers"], result["checks"]["notes"]
    assert result["spectral"]["layers"]


def test_train_on_a_folder_then_capture_with_its_normalisation(world):
    w = world
    ok(["train", "--arch", "resnet18", "--data", "folder", "--data-root", w / "images",
        "--image-size", "32", "--normalize", "dataset", "--epochs", "1", "--batch-size", "8",
        "--out", w / "trained", "--device", "cpu", "-q"])
    ckpt = torch.load(w / "trained" / "final.pt", weights_only=False)
    trained_on = ckpt["dataset"]
    assert trained_on["normalize"] == "dataset" and trained_on["split"] == "train"
    assert ckpt["class_names"] == CLASSES
    ok(["capture", w / "trained" / "final.pt", "--data", "folder", "--data-root", w / "images",
        "--image-size", "32", "--layer", "layer4", "--out", w / "runT", "-q"])
    overview = json.loads((w / "runT" / "run.json").read_text())
    assert overview["dataset"]["mean"] == pytest.approx(trained_on["mean"], abs=1e-5)
    assert overview["class_order"] == "class names match the checkpoint's"
