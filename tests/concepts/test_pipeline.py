"""run_concepts end to end on a tiny captured run, the CLI, folder concepts, spurious rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepprofile.capture.hooks import hook_count
from deepprofile.concepts.pipeline import ConceptsResult, load_concepts, run_concepts
from deepprofile.concepts.probes import load_probes
from deepprofile.concepts.sets import ConceptSet, array_concept, folder_concept, shapes_concepts
from deepprofile.errors import ConceptDataError, UnknownConceptError
from deepprofile.workflow import capture_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, spurious_net, eval_set):
    run_dir = tmp_path_factory.mktemp("concept_run")
    torch.set_num_threads(1)
    _, store = capture_run(spurious_net, eval_set, run_dir, ["act1", "act2"],
                           reductions="mean", quiet=True)
    return run_dir, store


def test_run_concepts_writes_results_and_probes(tiny_run, spurious_net, eval_set):
    run_dir, store = tiny_run
    concepts = shapes_concepts(store, include=["marker", "colour"]).select(
        ["marker", "colour:red"]).merge(
        array_concept("coin", np.random.default_rng(5).random(store.n_samples) < 0.5))
    result = run_concepts(run_dir, concepts, model=spurious_net, dataset=eval_set,
                          tcav_concepts=["marker"], tcav_layers=["act1"], tcav_classes=[0],
                          n_shuffles=2, n_tcav_images=15, n_tcav_inputs=15, seed=0,
                          links_options={"parts": ("mapper",)})
    assert result.profile("marker").known
    assert not result.profile("coin").known
    assert result.profile("colour:red").known  # colour is linear in the first conv layer
    for p in result.concepts:  # the random-init control ran on every layer
        assert all(lp.baseline_accuracy is not None for lp in p.layers)
    assert result.tcav is not None and {s.concept for s in result.tcav.scores} == {"marker"}
    written = json.loads((run_dir / "results" / "concepts.json").read_text())
    back = ConceptsResult.from_dict(written)
    assert back.profile("marker").first_layer == result.profile("marker").first_layer
    assert load_concepts(run_dir).layers == ("act1", "act2")
    probes = load_probes(run_dir)
    assert len(probes) == len(concepts.names) * 2
    marker = next(p for p in probes if p.concept == "marker" and p.layer == "act2")
    # the saved probe reproduces its accuracy on the stored activations
    pred = marker.logit(store.layer("act2")) > 0
    truth = concepts.mask("marker")
    assert (pred == truth).mean() > 0.9
    assert ConceptSet.load(run_dir).names == concepts.names
    assert hook_count(spurious_net) == 0
    assert result.accuracy_matrix().shape == (len(concepts.names), 2)
    # the links module ran with the options given (no mapper graphs here: skipped, named)
    assert "mapper" in result.structures["skipped"]
    with pytest.raises(UnknownConceptError):
        result.profile("markr")


def test_folder_concept_is_captured_and_probed(tiny_run, spurious_net, eval_set, tmp_path):
    """Marker images as a folder concept, unmarked images as the negatives folder."""
    from PIL import Image

    run_dir, store = tiny_run
    table = eval_set.concept_table()
    for name, rows in (("marked", np.flatnonzero(table["marker"])[:30]),
                       ("unmarked", np.flatnonzero(~table["marker"])[:30])):
        (tmp_path / name).mkdir()
        for i in rows:
            img = eval_set[int(i)][0].numpy().transpose(1, 2, 0)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    concept = folder_concept("marked", tmp_path / "marked", negatives=tmp_path / "unmarked")
    result = run_concepts(run_dir, concept, model=spurious_net,
                          dataset=eval_set, tcav=False, baseline=False, n_shuffles=2, links=False)
    profile = result.profile("marked")
    assert profile.n_samples == 60 and profile.n_positive == 30
    assert profile.known


def test_concept_set_of_another_size_is_rejected(tiny_run, spurious_net):
    run_dir, store = tiny_run
    with pytest.raises(ConceptDataError, match="one value per row"):
        run_concepts(run_dir, array_concept("x", np.arange(store.n_samples + 5) % 2 == 0),
                     model=spurious_net, tcav=False, baseline=False, links=False)


def test_cli_concepts_one_line_errors(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from deepprofile.cli import app

    run_dir, _ = tiny_run
    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    res = runner.invoke(app, ["concepts", str(run_dir), "--concept",
                              f"stripes={tmp_path / 'empty'}", "--no-tcav", "--no-baseline"])
    # the CLI turns DeepProfileErrors into exit code 2 and one line on stderr
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "holds no images" in err and "\n" not in err and "Traceback" not in res.output
    res = runner.invoke(app, ["concepts", str(run_dir), "--concept", "pets=circl",
                              "--no-tcav", "--no-baseline"])
    assert res.exit_code == 2 and "Did you mean: circle" in res.stderr


def test_cli_concepts_class_group_runs(tiny_run):
    from typer.testing import CliRunner

    from deepprofile.cli import app

    run_dir, _ = tiny_run
    res = CliRunner().invoke(app, ["concepts", str(run_dir), "--concept",
                                   "round=circle,cross", "--no-tcav", "--no-baseline",
                                   "--no-links", "-q"])
    assert res.exit_code == 0, res.output
    assert load_concepts(run_dir).concepts[0].concept == "round"


def test_spurious_detection_rules():
    from deepprofile.concepts.spurious import ModelBehaviour, PairConfig, detections

    def behaviour(gap: float, ratio: float, p: float, score: float) -> ModelBehaviour:
        return ModelBehaviour("m", "r", 0.9, 0.9 - gap, 0.9, 0.0, 0.0, ratio * 9 / 1024, ratio,
                              {"a": 0.9}, {"a": 0.5}, {"a": True}, {"a": score, "b": score},
                              {"a": p, "b": 1.0})

    cfg = PairConfig()
    hit = detections(behaviour(0.5, 5.0, 0.001, 0.9), cfg)
    assert hit == {"attribution": True, "probe": True, "tcav": True, "behaviour": True}
    miss = detections(behaviour(0.0, 1.0, 0.04, 0.9), cfg)  # 0.04 > 0.05 / 2 layers
    assert miss["attribution"] is False and miss["tcav"] is False and miss["behaviour"] is False


def test_positions_store_locates_the_marker(tmp_path, spurious_net, eval_set):
    """On a positions:k cloud the marker probe fires where the marker is (top-left)."""
    _, store = capture_run(spurious_net, eval_set, tmp_path, ["act1"], reductions="positions:32",
                           store_name="activations_pos.zarr", quiet=True)
    concepts = shapes_concepts(store, include=["marker"])
    result = run_concepts(tmp_path, concepts, store_name="activations_pos.zarr",
                          model=spurious_net, dataset=eval_set, tcav=False, baseline=False,
                          n_shuffles=2, links=False)
    grid = np.array(result.profile("marker").layer("act1").location, dtype=float)
    assert grid.shape == (16, 16)
    y, x = np.unravel_index(np.nanargmax(grid), grid.shape)
    assert y <= 2 and x <= 2, (y, x)


def test_concept_curves_of_two_runs(tiny_run, spurious_net, tmp_path):
    import shutil

    from deepprofile.concepts.compare import concept_curves

    run_dir, store = tiny_run
    run_concepts(run_dir, shapes_concepts(store, include=["marker"]), model=spurious_net,
                 tcav=False, baseline=False, n_shuffles=2, links=False)
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    notes: list[str] = []
    curves = concept_curves(run_dir, other, notes)
    assert curves["layers"] == ["act1", "act2"] and not notes
    row = curves["concepts"][0]
    assert row["concept"] == "marker" and row["a"]["accuracy"] == row["b"]["accuracy"]
    (other / "results" / "concepts.json").unlink()
    assert concept_curves(run_dir, other, notes) is None and "run B" in notes[0]


def test_comparison_report_shows_concept_curves(tiny_run, spurious_net, tmp_path):
    import shutil

    from deepprofile.compare import compare_runs
    from deepprofile.report import build_comparison_report

    run_dir, store = tiny_run
    run_concepts(run_dir, shapes_concepts(store, include=["marker"]), model=spurious_net,
                 tcav=False, baseline=False, n_shuffles=2, links=False)
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    result = compare_runs(run_dir, other, tmp_path / "cmp", quiet=True, topology=False,
                          mapper=False, spectral=False)
    assert result.concepts["concepts"][0]["concept"] == "marker"
    html = build_comparison_report(result, tmp_path / "cmp.html").read_text()
    assert "Concept curves" in html and "first layer A" in html
