"""Model registry, weight loading and checkpoints."""

from __future__ import annotations

import pytest
import torch

from deepprofile.capture import hook_count
from deepprofile.capture.inspect import layer_table
from deepprofile.errors import DeepProfileError, MissingFileError
from deepprofile.models import ARCHITECTURES, SmallResNet, build_model, load_model, save_checkpoint
from deepprofile.provenance import weights_hash

REQUIRED = ("resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "vgg11",
            "vgg16", "densenet121")


@pytest.mark.parametrize("name", REQUIRED)
def test_registered_torchvision_models_build_with_num_classes(name):
    model = build_model(name, num_classes=7)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last.out_features == 7


def test_small_resnet_shapes():
    model = SmallResNet(num_classes=10, in_channels=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    table = {row.name: row.output_shape for row in layer_table(model, (1, 32, 32))}
    assert table["layer1"] == (16, 32, 32)
    assert table["layer3"] == (64, 8, 8)
    assert table["layer2.branch"] == (32, 16, 16)


def test_layer_table_removes_hooks_when_forward_raises():
    model = SmallResNet(in_channels=1)
    model.train()
    with pytest.raises(RuntimeError):
        layer_table(model, (3, 32, 32))  # wrong channel count raises inside forward
    assert hook_count(model) == 0 and model.training


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, in_channels=3)
    path = save_checkpoint(tmp_path / "m.pt", model, "small_resnet", {"in_channels": 3},
                           epoch=3)
    loaded, info = load_model(path)
    assert info.arch == "small_resnet" and info.num_classes == 4
    assert info.weights_hash == weights_hash(model)
    assert info.extra["epoch"] == 3
    assert not loaded.training


def test_plain_state_dict_and_dataparallel_prefix(tmp_path):
    model = build_model("resnet18", num_classes=3)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    with pytest.raises(DeepProfileError, match="--arch"):
        load_model(tmp_path / "w.pt")
    loaded, info = load_model(tmp_path / "w.pt", arch="resnet18", num_classes=3)
    assert info.weights_hash == weights_hash(model)
    torch.save({"model_state_dict": model.state_dict(), "epoch": 9}, tmp_path / "c.pt")
    _, info2 = load_model(tmp_path / "c.pt", arch="resnet18", num_classes=3)
    assert info2.weights_hash == info.weights_hash


def test_weight_errors(tmp_path):
    with pytest.raises(MissingFileError, match="never downloads|neither"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(MissingFileError, match="Did you mean: resnet18"):
        load_model("resnet19")
    model = build_model("resnet18", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(DeepProfileError, match="num_classes=5"):
        load_model(tmp_path / "w.pt", arch="resnet18", num_classes=5)
    torch.save(model, tmp_path / "pickled.pt")
    with pytest.raises(DeepProfileError, match="unsafe"):
        load_model(tmp_path / "pickled.pt", arch="resnet18", num_classes=3)
    loaded, _ = load_model(tmp_path / "pickled.pt", arch="resnet18", num_classes=3, unsafe=True)
    assert isinstance(loaded, torch.nn.Module)


def test_unknown_architecture():
    with pytest.raises(DeepProfileError, match="Did you mean: resnet50"):
        build_model("resnet5")
    assert "small_resnet" in ARCHITECTURES
