"""Comparing two runs: comparability checks, the parts, principal angles, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprofile.compare import (
    ComparisonResult,
    check_comparable,
    compare_runs,
    principal_angles,
    random_subspace_angles,
)
from deepprofile.errors import StoreMismatchError
from deepprofile.report import build_comparison_report

LAYERS = ["stem", "layer1", "layer2", "layer3"]


def test_comparison_parts(comparison):
    out, result = comparison
    assert result.checks["differences"] == [] and result.checks["common_layers"] == LAYERS
    topo = result.topology_comparison()
    assert list(topo.layers_a) == LAYERS and list(topo.layers_b) == LAYERS
    assert result.params["cloud"] == "max_position"
    assert "cka_linear" in topo.specificity
    assert [m["layer_a"] for m in result.matched_layers] == LAYERS
    assert all(m["nearest_topology"] in LAYERS and m["nearest_cka"] in LAYERS
               for m in result.matched_layers)
    # mapper graphs exist for layer2 and layer3 in both runs
    rows = result.mapper["layers"]
    assert [r["layer_a"] for r in rows] == ["layer2", "layer3"]
    assert all(r["coot"] > 0 and -1 <= r["ari"] <= 1 and r["vi"] >= 0 for r in rows)
    spec = result.spectral["layers"]
    assert spec[0]["layer"] == "stem.0" and spec[-1]["layer"] == "fc"
    assert result.spectral["sources"] == ["results/spectral.json",
                                          "computed from the checkpoint"]
    angles = result.principal_angles["layers"]
    assert angles and all(0 <= r["min_deg"] <= r["mean_deg"] <= r["max_deg"] <= 90
                          for r in angles)


def test_comparison_json_round_trip(comparison):
    out, result = comparison
    back = ComparisonResult.read(out)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(result.to_dict(),
                                                                     sort_keys=True)


def test_comparison_report(comparison, tmp_path, parse_page):
    out, result = comparison
    path = build_comparison_report(out)
    assert path == out / "report.html"
    page = parse_page(path.read_text())
    for sid in ("runs", "layer-matching", "compare-mapper", "compare-spectral"):
        assert sid in page.ids
    assert all(h[1:] in page.ids for h in page.toc_hrefs)
    assert len(page.plotly_divs) >= 6
    # from the result object, to another place
    other = build_comparison_report(result, tmp_path / "cmp.html")
    assert other.exists() and "layer-matching" in parse_page(other.read_text()).ids


def _explicit_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles from the SVD of Qa^T Qb (Björck & Golub), without scipy."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)
    return np.sort(np.degrees(np.arccos(cos)))


def test_principal_angles_against_explicit_computation(report_runs):
    from deepprofile.models import load_model
    from deepprofile.spectral.conv_svd import get_module, layer_svd

    ma, _ = load_model(report_runs["ckpt_a"])
    mb, _ = load_model(report_runs["ckpt_b"])
    same = principal_angles(ma, ma, k=4)
    assert same and all(r["max_deg"] < 1e-4 for r in same)
    rows = {r["layer"]: r for r in principal_angles(ma, mb, k=4)}
    for name in ("layer2.branch.0", "fc"):
        ua = layer_svd(get_module(ma, name)).U[:, :4]
        ub = layer_svd(get_module(mb, name)).U[:, :4]
        assert np.allclose(rows[name]["angles_deg"], _explicit_angles(ua, ub), atol=1e-5)
    # a layer whose output directions are rotated inside its top-4 subspace keeps the
    # subspace: angles zero, although the weights differ
    mc, _ = load_model(report_runs["ckpt_a"])
    conv = get_module(mc, "layer2.branch.0")
    svd = layer_svd(conv)
    u4 = torch.as_tensor(svd.U[:, :4])
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    rot = torch.eye(svd.U.shape[0], dtype=torch.float64) + u4 @ (q - torch.eye(4,
                                                                  dtype=torch.float64)) @ u4.T
    with torch.no_grad():
        w = conv.weight.double().reshape(conv.weight.shape[0], -1)
        conv.weight.copy_((rot @ w).reshape(conv.weight.shape).float())
    rotated = {r["layer"]: r for r in principal_angles(ma, mc, k=4)}
    assert rotated["layer2.branch.0"]["max_deg"] < 0.05
    assert not torch.equal(conv.weight, get_module(ma, "layer2.branch.0").weight)


def test_random_subspace_angles_level():
    # in high dimension two random k-dim subspaces are nearly orthogonal
    high = random_subspace_angles(400, 2, n_draws=10)
    assert np.degrees(high).min() > 75
    # a k-dim subspace of R^(k+1) meets another one in k-1 dimensions: k-1 zero angles
    low = random_subspace_angles(5, 4, n_draws=5)
    assert np.allclose(low[:3], 0, atol=1e-7) and low[3] > 0
    assert math.isclose(float(np.degrees(random_subspace_angles(50, 3, seed=1)).mean()),
                        float(np.degrees(random_subspace_angles(50, 3, seed=1)).mean()))


def test_incomparable_runs_are_refused(report_runs, tmp_path):
    from deepprofile.data import load_dataset
    from deepprofile.models import load_model
    from deepprofile.workflow import capture_run

    model, info = load_model(report_runs["ckpt_b"])
    run_c = tmp_path / "run_c"
    capture_run(model, load_dataset("digits", split="test"), run_c, ["layer2"],
                indices=range(5, 25), quiet=True, model_info=info.to_dict())
    checks = check_comparable(report_runs["a"], run_c)
    text = "; ".join(checks["differences"])
    assert "number of samples differs" in text and "different images" in text
    assert any("only in A: stem, layer1, layer3" in n for n in checks["notes"])
    with pytest.raises(StoreMismatchError, match="cannot be compared"):
        compare_runs(report_runs["a"], run_c, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_cli_compare_fast_parts(report_runs, tmp_path):
    from deepprofile.cli import app

    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, [
        "compare", str(report_runs["a"]), str(report_runs["b"]), "--out", str(out),
        "--no-topology", "--no-spectral", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "report.html")
    saved = ComparisonResult.read(out)
    assert saved.topology is None and saved.spectral is None
    assert [r["layer_a"] for r in saved.mapper["layers"]] == ["layer2", "layer3"]
