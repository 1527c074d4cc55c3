"""The training-point-ranking detector on shapes: a planted marker vs a clean model (slow)."""

from __future__ import annotations

import pytest
from torch import nn

from deepprofile.models.registry import register_model


class TinyShapesNet(nn.Module):
    """conv(3->8, 3x3) -> relu -> 4x4 max pool -> conv(8->8) -> relu -> mean pool -> fc."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.down = nn.MaxPool2d(4)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.down(self.act1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


register_model("tiny_shapes_da", TinyShapesNet)


def _run(tmp_path, marker_rate: float):
    from deepprofile.data import load_dataset
    from deepprofile.data_attribution.pipeline import run_data_attribution
    from deepprofile.models import load_model
    from deepprofile.models.train import TrainConfig, train
    from deepprofile.workflow import capture_run

    params = {"n": 400, "marker_rate": marker_rate}
    config = TrainConfig(arch="tiny_shapes_da", arch_kwargs={}, dataset="shapes",
                         dataset_params=params, epochs=6, n_checkpoints=2, lr=0.05,
                         batch_size=32)
    res = train(config, tmp_path / "model", quiet=True)
    model, info = load_model(res.final_checkpoint)
    test = load_dataset("shapes", split="test", n=120, marker_rate=marker_rate)
    capture_run(model, test, tmp_path / "run", ["act2"], model_info=info.to_dict(),
                checkpoint=res.final_checkpoint, quiet=True)
    out = run_data_attribution(tmp_path / "run", proj_dim=128, n_targets=40, k=20, quiet=True)
    return {t.name: t for t in out.targets if t.kind == "class"}


@pytest.mark.slow
def test_marker_detector_fires_on_spurious_model_only(tmp_path):
    spurious = _run(tmp_path / "spurious", 0.9)["predicted circle"].precision
    clean = _run(tmp_path / "clean", 0.05)["predicted circle"].precision
    assert spurious is not None and clean is not None
    assert spurious.precision > 2 * spurious.base_rate
    assert clean.precision < 2 * clean.base_rate + 0.1
    assert spurious.lift > clean.lift
