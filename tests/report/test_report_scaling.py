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


# --------------------------------------------------------------------------------------
# spectra of many layers
# --------------------------------------------------------------------------------------
def _spectral_layer(name: str, rng: np.random.Generator, scale: float) -> dict:
    from deepprofile.spectral.rmt import mp_edges

    p, n = 24, 48
    w = rng.normal(size=(p, n)) * scale
    eig = np.sort(np.linalg.eigvalsh(w @ w.T / n))
    q, sigma2 = p / n, scale ** 2
    return {"layer": name, "module_type": "Conv2d", "matrix_shape": [p, n], "n": n,
            "eigenvalues": eig.tolist(), "spectral_norm": float(np.sqrt(eig[-1] * n)),
            "stable_rank": float(eig.sum() / eig[-1]), "alpha": 3.0,
            "mp": {"q": q, "sigma2": sigma2, "lambda_plus": float(mp_edges(q, sigma2)[1]),
                   "ks": 0.1, "n_spikes": 0},
            "power_law": {"alpha": 3.0, "xmin": float(eig[p // 2])}}


def _spectral_result(n_layers: int, trained_scale: float) -> dict:
    names = [f"layer{i // 3 + 1}.{i % 3}.conv{i % 3 + 1}" for i in range(n_layers)]
    rng = np.random.default_rng(0)
    random = [_spectral_layer(n, rng, 1.0) for n in names]
    rng = np.random.default_rng(0)  # the same draws: an untrained model when scale == 1
    trained = [_spectral_layer(n, rng, trained_scale) for n in names]
    return {"trained": {"layers": trained}, "random_init": {"layers": random},
            "alpha_hat": {"trained": 1.0, "random_init": 1.0}}


def _section(run: Path, tmp_path: Path, builder):
    from deepprofile.report import ReportContext

    return builder(ReportContext(run, tmp_path))


def _figures(sec) -> dict:
    from deepprofile.report import FigureBlock, Grid

    out = {}
    for b in sec.blocks:
        for item in (b.items if isinstance(b, Grid) else [b]):
            if isinstance(item, FigureBlock):
                out[item.title] = item
    return out


def test_every_layer_has_its_spectral_density_and_spectrum(tmp_path):
    from deepprofile.report.sections.spectral import spectral_section

    run = _run_folder(tmp_path, {"spectral": _spectral_result(20, 1.0)})
    figs = _figures(_section(run, tmp_path, spectral_section))
    names = [r["layer"] for r in _spectral_result(20, 1.0)["trained"]["layers"]]
    esd = figs["ESD with Marchenko-Pastur and power-law fits"]
    assert all(f'"label":"{n}"' in esd.html for n in names), "a layer is missing from the ESD"
    assert "all 20" in esd.caption or "20 weight layers" in esd.caption
    picker = figs["Singular value spectrum per layer"]
    assert all(f'"label":"{n}"' in picker.html for n in names)
    assert "Singular values by depth" in figs and "Singular value spectra" not in figs


def test_spectral_caption_follows_the_data(tmp_path):
    from deepprofile.report.sections.spectral import spectral_section

    untrained = _run_folder(tmp_path / "u", {"spectral": _spectral_result(4, 1.0)})
    cap = _figures(_section(untrained, tmp_path, spectral_section))[
        "Singular value spectra"].caption
    assert "lifted the top" not in cap and "Training lifts" not in cap
    assert "in 0 of 4 layers" in cap and "match random initialisation" in cap
    trained = _run_folder(tmp_path / "t", {"spectral": _spectral_result(4, 2.0)})
    cap = _figures(_section(trained, tmp_path, spectral_section))[
        "Singular value spectra"].caption
    assert "in 4 of 4 layers" in cap and "top of the spectrum sits above random init" in cap


def test_mapper_section_warns_when_the_cover_is_too_fine(tmp_path):
    from deepprofile.mapper import build_mapper
    from deepprofile.report import Text
    from deepprofile.report.sections.mapper import mapper_section

    rng = np.random.default_rng(0)
    g = build_mapper(rng.normal(size=(240, 5)), intervals=40, layer="layer4")
    run = _run_folder(tmp_path, {"mapper": {"layers": {"layer4": g.to_dict()},
                                            "params": {"intervals": 40}}})
    notes = [b.text for b in _section(run, tmp_path, mapper_section).blocks
             if isinstance(b, Text) and b.note]
    assert any(n.startswith("layer4: Too few points per interval") for n in notes)
