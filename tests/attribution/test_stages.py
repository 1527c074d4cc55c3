"""run_attribution's stage switches, BIG without any boundary, and the stage progress lines."""

from __future__ import annotations

import numpy as np
import torch

from deepprofile.attribution.pipeline import run_attribution, summarize_attribution
from deepprofile.data import ArrayDataset
from deepprofile.progress import StageLog

from .conftest import TanhCNN


def _data(n: int = 24) -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.normal(size=(n, 1, 8, 8)).astype(np.float32), np.arange(n) % 3)


def test_big_without_any_boundary_is_left_out_and_said(capsys):
    torch.manual_seed(0)
    model = TanhCNN().eval()
    with torch.no_grad():
        model.fc.weight.zero_()  # constant logits: no input reaches a decision boundary
    result = run_attribution(model, None, _data(), n_images=2, n_steps=2, n_draws=1,
                             sigmas=(0.0,), robustness=False, alignment=False,
                             accuracy_images=4, quiet=True)
    assert result.boundary["n_found"] == 0 and result.boundary["used"] is False
    assert "big" not in result.methods and "big" not in result.examples["saliency"]
    assert result.robustness == {} and result.alignment == {}
    text = summarize_attribution(result)
    assert "no boundary point found for any of the 2 images" in text
    assert "robustness: skipped" in text
    assert capsys.readouterr().err == ""  # quiet: no stage lines


def test_skipped_stages_leave_empty_parts():
    torch.manual_seed(0)
    result = run_attribution(TanhCNN().eval(), None, _data(), n_images=2, n_steps=2,
                             n_draws=1, sigmas=(0.0,), robustness=False, boundary=False,
                             alignment=False, accuracy_images=4, quiet=True)
    assert result.boundary == {} and result.robustness == {} and result.alignment == {}
    assert set(result.timings) >= {"maps", "alignment", "total"}
    assert "BIG: skipped" in summarize_attribution(result)


def test_stage_log_estimates_from_measured_time(capsys):
    log = StageLog("work", {"a": 1, "b": 3}, always=True)
    log.start -= 10  # pretend stage a took 10 s
    line = log.finished("a")
    assert "a done (1/2)" in line and "about 30 s left" in line
    assert "estimated total 40 s" in line
    assert line in capsys.readouterr().err
    assert log.finished("unknown") is None
