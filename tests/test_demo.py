"""The README's first quickstart command: the demo runs end to end (small settings), and its
numbers are those of a working pipeline.

Measured on the fast demo (3 epochs per seed, 2026-12-01): test accuracy 0.93 for both seeds
(with one or two torch threads; chance is 0.10); specificity across seeds 0.50 for the headline
measure (sliced Wasserstein H1) and for linear CKA, with stem and layer3 matched (chance 0.25);
alpha-hat trained -0.20 against -1.12 for the random-init baseline.
"""

from __future__ import annotations

import json

import pytest
import torch

from deepprofile.demo import run_demo


def _json(path):
    return json.loads(path.read_text())


def test_demo_end_to_end(tmp_path):
    lines: list[str] = []
    paths = run_demo(tmp_path / "demo", fast=True, quiet=True, echo=lines.append)
    out = tmp_path / "demo"
    assert paths["report"] == out / "index.html" and paths["report"].stat().st_size > 100_000
    assert paths["compare"].exists()
    for seed in ("seed0", "seed1"):
        results = {p.stem for p in (out / seed / "results").glob("*.json")}
        assert {"capture", "topology", "mapper", "spectral"} <= results
        assert (out / "models" / seed / "final.pt").exists()
        # accuracy: trained well above chance (0.10), and the captured run holds the same
        # model (a wrong checkpoint or a broken capture would give another accuracy)
        log = _json(out / "models" / seed / "train_log.json")
        accuracy = log["result"]["test_accuracy"]
        assert accuracy >= 0.85
        capture = _json(out / seed / "results" / "capture.json")
        assert capture["accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert capture["n_samples"] == 540
    assert (out / "seed0" / "results" / "attribution.json").exists()
    compare = _json(out / "compare" / "results" / "compare.json")
    topo = compare["topology"]
    assert topo["layers_a"] == ["stem", "layer1", "layer2", "layer3"]
    # specificity across seeds: above chance (0.25 for 4 layers) for the headline measure
    # and linear CKA, with the first and the last layer matched to themselves
    for measure in (topo["primary"], "cka_linear"):
        spec = topo["specificity"][measure]
        assert spec["accuracy"] >= 0.5, measure
        assert spec["nearest"][0] == 0 and spec["nearest"][3] == 3, measure
    assert topo["params"]["cka_samples"]["n_images"] == 300
    # alpha-hat: the baseline is the architecture's constructor under the run's seed, which
    # an independent build reproduces; training moved alpha-hat well away from it
    spectral = _json(out / "seed0" / "results" / "spectral.json")
    baseline = spectral["parameters"]["random_init_baseline"]
    assert baseline["method"] == "constructor" and baseline["arch"] == "small_resnet"
    from deepprofile.models import build_model
    from deepprofile.spectral.rmt import WeightSpectrumAnalyzer

    torch.manual_seed(baseline["seed"])
    fresh = build_model("small_resnet", num_classes=baseline["num_classes"],
                        **baseline["arch_kwargs"])
    reference = WeightSpectrumAnalyzer(compare_random_init=False).fit(fresh).result_
    alpha_hat = spectral["alpha_hat"]
    assert alpha_hat["random_init"] == pytest.approx(reference.alpha_hat, rel=1e-9)
    assert alpha_hat["trained"] - alpha_hat["random_init"] >= 0.4
    assert spectral["trained"]["mean_alpha"] < spectral["random_init"]["mean_alpha"]
    text = "\n".join(lines)
    assert "specificity" in text.lower() and "report:" in text
    spurious = json.loads((out / "shapes" / "results" / "spurious.json").read_text())
    assert set(spurious["detection"]) == {"attribution", "probe", "tcav", "behaviour"}
    for name in ("spurious", "clean"):
        assert (out / "shapes" / name / "results" / "concepts.json").exists()
    assert paths["shapes"]["report"].exists() and "spurious-signal detection" in text
    # a second run reuses the trained checkpoints instead of training again
    lines.clear()
    run_demo(tmp_path / "demo", fast=True, quiet=True, echo=lines.append)
    assert any("using trained model" in line for line in lines)
