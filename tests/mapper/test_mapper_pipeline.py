"""run_mapper / summarize_mapper and the `deepprofile mapper` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from deepprofile.capture.store import ActivationStore
from deepprofile.errors import MissingFileError, UnknownLayerError
from deepprofile.mapper import cloud_from_store, mapper_from_store
from deepprofile.mapper.cli import register
from deepprofile.mapper.pipeline import (
    MapperResult,
    load_mapper_result,
    run_mapper,
    summarize_mapper,
)
from deepprofile.rundir import RunDir

N, K = 120, 3
SHAPES = {"stem": (16,), "layer1": (24,), "layer3": (K, 8)}
REDUCTIONS = {"stem": "mean", "layer1": "max_position", "layer3": f"positions:{K}"}


def make_run(root, dataset_spec=None):
    """A finished store with class structure that sharpens with depth (synthetic)."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 4
    centres = {name: rng.normal(size=(4, shape[-1])) for name, shape in SHAPES.items()}
    acts = {
        "stem": centres["stem"][labels] * 0.5 + rng.normal(size=(N, 16)),
        "layer1": centres["layer1"][labels] * 3 + rng.normal(size=(N, 24)) * 0.5,
        "layer3": centres["layer3"][labels][:, None, :] * 4 + rng.normal(size=(N, K, 8)) * 0.3,
    }
    logits = np.eye(4)[labels] * 4 + rng.normal(size=(N, 4))
    meta = {"model": "synthetic", "class_names": ["a", "b", "c", "d"]}
    if dataset_spec is not None:
        meta["dataset"] = dataset_spec
    store = ActivationStore.create(
        root / RunDir.STORE, config={"test": 1}, layer_shapes=SHAPES, reductions=REDUCTIONS,
        output_shapes={k: (v[-1], 4, 4) for k, v in SHAPES.items()}, n_samples=N,
        num_classes=4, chunk_size=64, metadata=meta,
    )
    for start in range(0, N, 64):
        sl = slice(start, min(start + 64, N))
        store.write_chunk(start, {
            **{f"layers/{k}": v[sl].astype(np.float32) for k, v in acts.items()},
            "labels": labels[sl], "predictions": logits[sl].argmax(1), "indices": np.arange(N)[sl],
            "logits": logits[sl].astype(np.float32),
        })
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(
        tmp_path_factory.mktemp("run"), {"name": "digits", "split": "test", "size": 32}
    )


def test_positions_layer_becomes_n_times_k_points(run_dir):
    store = ActivationStore.open(run_dir / RunDir.STORE)
    cloud = cloud_from_store(store, "layer3")
    assert cloud.points.shape == (N * K, 8)
    np.testing.assert_array_equal(cloud.point_sample, np.repeat(np.arange(N), K))
    np.testing.assert_array_equal(cloud.labels, np.repeat(store.labels, K))
    np.testing.assert_array_equal(cloud.points[K * 5 + 1], store.layer("layer3")[5, 1])
    res = mapper_from_store(store, "layer3", intervals=10)
    assert res.n_points == N * K and res.point_sample is not None
    assert res.provenance["reduction"] == f"positions:{K}"
    assert res.class_names == ("a", "b", "c", "d")


def test_run_mapper_writes_pages_json_and_matrix(run_dir):
    result = run_mapper(run_dir, layers=["stem", "layer1"], quiet=True, intervals=10)
    assert set(result.pages) == {"stem", "layer1"}
    for rel in result.pages.values():
        page = (run_dir / rel).read_text()
        assert "dp-thumbs" in page  # digits thumbnails found via the dataset spec
    assert result.params["thumbnails"] is True
    data = json.loads((run_dir / "results" / "mapper.json").read_text())
    assert set(data["layers"]) == {"stem", "layer1"}
    back = load_mapper_result(run_dir)
    assert back.to_dict() == MapperResult.from_dict(data).to_dict()
    coot = back.distances["coot"]
    assert coot.layers == ("stem", "layer1") and coot.values.shape == (2, 2)
    assert coot.values[0, 1] > 0 and back.distances["vi"].values[0, 1] > 0
    # class structure sharpens with depth in this synthetic store
    assert back.graphs["layer1"].stats.node_purity > back.graphs["stem"].stats.node_purity
    text = summarize_mapper(back)
    for name in ("stem", "layer1", "node pur.", "class pur.", "loops"):
        assert name in text


def test_cli_merges_layers_and_accepts_the_store_path(tmp_path):
    run = make_run(tmp_path)  # no dataset recorded: pages without thumbnails
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands: `mapper` stays a subcommand
    runner = CliRunner()
    out = runner.invoke(app, ["mapper", str(run), "--layer", "stem", "--intervals", "8", "-q"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        app, ["mapper", str(run / RunDir.STORE), "--layer", "layer*", "--intervals", "8"]
    )
    assert out.exit_code == 0, out.output
    assert "mapper.json" in out.output and "layer3.html" in out.output
    result = load_mapper_result(run)
    assert list(result.graphs) == ["stem", "layer1", "layer3"]
    assert all((run / "mapper" / f"{name}.html").exists() for name in result.graphs)
    assert result.params["thumbnails"] is False
    # layer3 holds N*K points (positions), so only stem and layer1 are compared
    assert result.distances["coot"].layers == ("stem", "layer1")
    assert "dp-thumbs" not in (run / "mapper" / "stem.html").read_text()


def test_errors_are_clear(run_dir, tmp_path):
    with pytest.raises(UnknownLayerError, match="layer1"):
        run_mapper(run_dir, layers=["layer9"], quiet=True)
    with pytest.raises(MissingFileError):
        run_mapper(tmp_path / "nothing", quiet=True)


def test_cli_reports_page_sizes_and_a_missing_browser(tmp_path, monkeypatch):
    import webbrowser

    def no_browser(*args, **kwargs):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", no_browser)
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    run = make_run(tmp_path)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = CliRunner().invoke(app, ["mapper", str(run), "--layer", "stem", "--intervals", "8",
                                   "--open"])
    assert out.exit_code == 0, out.output
    size = (run / "mapper" / "stem.html").stat().st_size
    assert f"stem.html ({size / 1e3:.0f} kB)" in out.output
    assert "No web browser available" in out.output
    assert opened == []
