"""run_topology / compare_topology / the CLI on tiny captured runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from deepprofile.capture.runner import capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.models.small import SmallResNet
from deepprofile.topology import (
    TopologyComparison,
    TopologyResult,
    compare_topology,
    run_topology,
    summarize_topology,
)
from deepprofile.topology.cli import register

LAYERS = ["stem", "layer1", "layer2", "layer3"]
FAST = dict(metrics=("sliced_wasserstein", "bottleneck"), cka=("linear",),
            sensitivity_k=(0, 1, 2))


def _make_run(root: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = SmallResNet(widths=(4, 8, 8)).eval()
    rng = np.random.default_rng(0)  # same images for both seeds
    data = ArrayDataset(rng.normal(size=(80, 1, 12, 12)).astype(np.float32),
                        rng.integers(0, 3, 80), name="noise")
    run = root / f"run{seed}"
    capture_to_store(model, data, LAYERS, run / "activations.zarr", reductions="mean",
                     quiet=True)
    capture_to_store(model, data, LAYERS, run / "activations_maxpos.zarr",
                     reductions="max_position", quiet=True)
    capture_to_store(model, data, ["layer2", "layer3"], run / "activations_pos.zarr",
                     reductions="positions:4", quiet=True)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("topo")
    return _make_run(root, 0), _make_run(root, 1)


def test_run_topology_writes_a_round_tripping_result(runs) -> None:
    run, _ = runs
    result = run_topology(run, n_points=60, quiet=True, **FAST)
    assert result.layers == tuple(LAYERS)
    path = run / "results" / "topology.json"
    data = json.loads(path.read_text())
    again = TopologyResult.from_dict(data)
    for metric in FAST["metrics"]:
        for dim in (0, 1):
            mat = result.matrix(metric, dim)
            assert mat.shape == (4, 4)
            np.testing.assert_allclose(mat, mat.T)
            np.testing.assert_allclose(again.matrix(metric, dim), mat)
    np.testing.assert_allclose(np.diag(result.cka["linear"]), 1.0)
    assert set(result.sensitivity) == set(LAYERS)
    assert result.provenance["model"] == "SmallResNet"
    assert result.provenance["weights_hash"]
    assert result.provenance["stores"][0].endswith("activations_maxpos.zarr")
    assert result.params["n_points"] == 60
    assert result.diagrams["layer2"].params["library"] == "giotto-ph"
    assert np.isinf(again.diagrams["stem"][0][:, 1]).sum() == 1
    text = summarize_topology(result)
    assert "layer3" in text and "sliced_wasserstein" in text
    # counts agree with the diagrams themselves: never more above the noise than features
    import re

    h0 = result.diagrams["stem"][0]
    assert f"H0: {len(h0)} features (1 never die)" in text
    for total, above in re.findall(r"H\d: (\d+) features[^,]*, (\d+) above", text):
        assert int(above) <= int(total)


def test_run_topology_with_an_explicit_store_and_image_clouds(runs) -> None:
    run, _ = runs
    result = run_topology(run, store=run / "activations.zarr", cloud="image", n_points=50,
                          layers=["layer2", "layer3"], quiet=True, write=False, **FAST)
    assert result.layers == ("layer2", "layer3")
    assert result.clouds["layer3"]["provenance"]["reduction"] == "mean"


def test_compare_with_itself_is_perfectly_specific(runs, tmp_path) -> None:
    run, _ = runs
    out = tmp_path / "cmp.json"
    cmp = compare_topology(run, run / "activations_maxpos.zarr", n_points=60, quiet=True,
                           out=out, metrics=("sliced_wasserstein", "wasserstein"))
    for metric in ("sliced_wasserstein", "wasserstein"):
        for dim in (0, 1):
            np.testing.assert_allclose(np.diag(cmp.cross[metric][dim]), 0.0, atol=1e-12)
    assert cmp.accuracy == 1.0
    assert cmp.specificity["cka_linear"].accuracy == 1.0
    again = TopologyComparison.from_dict(json.loads(out.read_text()))
    assert again.accuracy == 1.0 and again.layers_b == tuple(LAYERS)
    assert "Specificity accuracy" in summarize_topology(cmp)


def test_compare_two_seeds(runs) -> None:
    a, b = runs
    cmp = compare_topology(a, b, n_points=60, quiet=True, metrics=("sliced_wasserstein",))
    mat = cmp.cross["sliced_wasserstein"][1]
    assert mat.shape == (4, 4) and np.all(mat > 0)
    assert 0.0 <= cmp.accuracy <= 1.0
    assert cmp.provenance_a["weights_hash"] != cmp.provenance_b["weights_hash"]


def test_cli_topology_and_compare(runs, tmp_path) -> None:
    a, b = runs
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer in multi-command mode
        """Nothing."""

    runner = CliRunner()
    res = runner.invoke(app, ["topology", str(a), "--n-points", "50", "--metric",
                              "sliced_wasserstein", "--homology", "1", "-l", "layer*",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    data = json.loads((a / "results" / "topology.json").read_text())
    assert data["layers"] == ["layer1", "layer2", "layer3"]
    assert list(data["distances"]["sliced_wasserstein"]) == ["1"]
    out = tmp_path / "c.json"
    res = runner.invoke(app, ["topology", "--compare", str(a), str(b), "--n-points", "50",
                              "--metric", "bottleneck", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Specificity accuracy" in res.output
    assert json.loads(out.read_text())["kind"] == "topology_comparison"
    res = runner.invoke(app, ["topology", str(a), str(b), "--quiet"])
    assert res.exit_code != 0


def test_positions_clouds_from_their_own_store(runs) -> None:
    run, _ = runs
    result = run_topology(run, cloud="positions", positions_k=4, n_points=100, quiet=True,
                          write=False, **FAST)
    assert result.layers == ("layer2", "layer3")
    assert result.clouds["layer3"]["n_available"] == 80 * 4
    assert result.clouds["layer3"]["n_points"] == 100
    assert result.cka == {}  # several points per image: no pairing for CKA
