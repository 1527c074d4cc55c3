"""Report items of issues 15 and 18: what a 54-layer run needs (size, pickers, captions that
follow the data) and small correctness fixes. Built from small synthetic results files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from deepprofile.report import build_report
from deepprofile.rundir import RunDir


def _run_folder(tmp_path: Path, results: dict[str, object] | None = None,
                overview: dict[str, object] | None = None) -> Path:
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    rd = RunDir(run)
    rd.write_overview({"model": "m", "weights_hash": "abc", "n_samples": 4,
                       "command": "deepprofile capture m --out run", "date": "d0",
                       **(overview or {})})
    for name, data in (results or {}).items():
        (run / "results" / f"{name}.json").write_text(json.dumps(data))
    return run


def test_every_command_that_built_the_run_is_listed(tmp_path, monkeypatch, parse_page):
    run = _run_folder(tmp_path)
    rd = RunDir(run)
    monkeypatch.setattr(sys, "argv", ["deepprofile", "topology", str(run)])
    rd.write_result("topology_x", {"a": 1})
    monkeypatch.setattr(sys, "argv", ["deepprofile", "mapper", str(run), "--layer", "l3"])
    rd.write_result("mapper_x", {"a": 1})
    rd.write_result("mapper_y", {"a": 1})  # same command, second result: one entry
    commands = json.loads((run / "run.json").read_text())["commands"]
    assert [c["command"] for c in commands] == [
        "deepprofile capture m --out run", f"deepprofile topology {run}",
        f"deepprofile mapper {run} --layer l3"]
    assert commands[2]["results"] == ["mapper_x", "mapper_y"]
    html = build_report(run, tmp_path / "r.html").read_text()
    for c in commands:
        assert c["command"] in html


# --------------------------------------------------------------------------------------
# attribution maps as small inline PNG images
# --------------------------------------------------------------------------------------
def test_png_writer_round_trips_through_an_independent_decoder():
    from deepprofile.report.images import colormap_lut, png_bytes

    Image = pytest.importorskip("PIL.Image")
    import io

    rng = np.random.default_rng(0)
    idx = rng.integers(0, 256, size=(7, 5), dtype=np.uint8)
    lut = colormap_lut("Inferno")
    got = np.asarray(Image.open(io.BytesIO(png_bytes(idx, lut))).convert("RGB"))
    np.testing.assert_array_equal(got, lut[idx])
    rgb = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)
    grey = rng.integers(0, 256, size=(2, 9), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(grey)))), grey)


def test_downsample_is_the_block_mean():
    from deepprofile.report.images import downsample

    a = np.arange(5 * 7, dtype=np.float64).reshape(5, 7)
    out = downsample(a, max_side=3)  # k = 3: pad to 6 x 9 by repeating edges
    padded = np.pad(a, ((0, 1), (0, 2)), mode="edge")
    expect = np.array([[padded[3 * i:3 * i + 3, 3 * j:3 * j + 3].mean() for j in range(3)]
                       for i in range(2)])
    np.testing.assert_allclose(out, expect)
    assert downsample(a, max_side=7) is not None and downsample(a, 7).shape == (5, 7)


def _attribution_result(n_images: int, methods: int, side: int) -> dict:
    rng = np.random.default_rng(0)
    keys = [f"m{k}" for k in range(methods)]
    return {
        "params": {"n_images": n_images, "sigmas": [0.0]},
        "methods": {k: {"label": f"method {k}"} for k in keys},
        "examples": {
            "images": rng.random((n_images, side, side)).round(3).tolist(),
            "saliency": {k: rng.random((n_images, side, side)).round(3).tolist()
                         for k in keys},
            "labels": [0] * n_images, "predictions": [1] * n_images,
            "labels_of_methods": {k: f"method {k}" for k in keys},
        },
    }


def test_attribution_grid_is_inline_png_images_not_heatmaps(tmp_path, parse_page):
    """A ResNet-50-sized grid (4 images x 9 methods at 224 px) costs well under a megabyte;
    as plotly heatmaps it took 24.5 MB."""
    run = _run_folder(tmp_path, {"attribution": _attribution_result(4, 9, 224)})
    html = build_report(run, tmp_path / "r.html").read_text()
    page = parse_page(html)
    maps = [im for im in page.images if im.get("src", "").startswith("data:image/png;base64,")]
    assert len(maps) == 4 * 10
    assert html.count('"type":"heatmap"') == 0
    assert len(html.encode()) < 1_500_000
    import base64
    import io

    Image = pytest.importorskip("PIL.Image")
    first = Image.open(io.BytesIO(base64.b64decode(maps[1]["src"].split(",", 1)[1])))
    assert first.size == (112, 112)  # 224 px averaged down by 2
