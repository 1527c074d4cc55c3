"""run_concept_links on a tiny shapes run: every part runs, writes JSON, skips cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepprofile.concepts.links import run_concept_links
from deepprofile.concepts.probes import ConceptProbe, fit_probe
from deepprofile.concepts.sets import shapes_concepts
from deepprofile.data import ShapesDataset
from deepprofile.errors import DeepProfileError
from deepprofile.models import SmallResNet, save_checkpoint
from deepprofile.workflow import capture_run

LAYERS = ["stem", "layer1", "layer2"]
FAST = {"purity_permutations": 5, "topology_points": 12, "topology_permutations": 4,
        "homology_dims": (0,), "n_vectors": 4, "n_random": 200, "attribution_images": 3,
        "n_steps": 8, "n_examples": 2}


def _run_mapper(run, **kw):
    from deepprofile.mapper.pipeline import run_mapper

    return run_mapper(run, **kw)


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    kwargs = {"in_channels": 3, "widths": (4, 6, 8)}
    model = SmallResNet(num_classes=4, **kwargs).eval()
    root = tmp_path_factory.mktemp("links_run")
    ckpt = save_checkpoint(root / "model.pt", model, "small_resnet", kwargs)
    dataset = ShapesDataset(n=60, seed=5, marker_base_rate=0.5)
    run, store = capture_run(model, dataset, root / "run", LAYERS, checkpoint=str(ckpt),
                             quiet=True)
    _run_mapper(run.path, layers=["layer1"], thumbnails=False, quiet=True, intervals=6,
                overlap=0.3, min_samples=2)
    from deepprofile.spectral.pipeline import run_spectral

    run_spectral(model, run.path, layers=["layer1"], store=store, compare_random_init=False,
                 quiet=True, n_vectors=4)
    concepts = shapes_concepts(store, include=["marker", "size"])
    probes = [ConceptProbe.from_fit(fit_probe(store.layer(layer), concepts.mask(name),
                                              n_splits=3),
                                    layer=layer, concept=name, reduction="mean",
                                    store_name="activations.zarr")
              for layer in LAYERS for name in concepts.names]
    torch.set_num_threads(threads)
    yield run.path, concepts, probes, store
    torch.set_num_threads(threads)


def test_every_part_runs_and_is_json(shapes_run):
    path, concepts, probes, store = shapes_run
    torch.set_num_threads(1)
    out = run_concept_links(path, concepts, probes, seed=0, **FAST)
    assert out["skipped"] == {}
    json.dumps(out)  # plain JSON
    # mapper: composition per node agrees with the masks
    graph = out["mapper"]["layers"]["layer1"]
    mapper = json.loads((path / "results" / "mapper.json").read_text())["layers"]["layer1"]
    node0 = mapper["nodes"][0]["members"]
    assert graph["composition"]["marker"][0] == pytest.approx(
        concepts.mask("marker")[node0].mean())
    purity = graph["purity"]["marker"]["purity"]
    assert purity is None or 0 < purity <= 1
    assert out["mapper"]["purity_by_depth"]["marker"] == [purity]
    # topology: one test per (layer, concept), with the probe accuracy beside it
    tests = out["topology"]["tests"]
    assert len(tests) == len(LAYERS) * len(concepts.names)
    assert all(t["p_value"] in {k / 5 for k in range(1, 6)} for t in tests)
    # spectra: stem -> stem.0, layer1 -> its last branch conv; class edges from spectral.json
    spectra = out["spectra"]["layers"]
    assert spectra["stem"]["weight_layer"] == "stem.0"
    assert spectra["layer1"]["weight_layer"] == "layer1.branch.3"
    assert spectra["layer1"]["class_edges_from"] == "results/spectral.json"
    hyper = spectra["layer1"]["hypergraph"]
    assert {"circle", "concept:marker"} <= set(hyper["edges"])
    assert all(len(a["cosine"]) == 4 for a in spectra["layer1"]["alignments"].values())
    # attributions: best layer per concept, marker scored on its patch, maps on disk
    maps = {m["concept"]: m for m in out["attributions"]["maps"]}
    assert set(maps) == set(concepts.names)
    marker = maps["marker"]
    assert marker["region"] == "marker patch"
    assert marker["region_share"]["mean_area_share"] == pytest.approx(9 / 1024)
    saved = np.load(path / marker["maps"])
    assert saved["images"].shape == (2, 3, 32, 32) and saved["saliency"].shape == (2, 32, 32)
    assert concepts.mask("marker")[saved["rows"]].all()


def test_missing_inputs_are_skipped_not_fatal(shapes_run, tmp_path):
    path, concepts, probes, _ = shapes_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    (copy / "results" / "mapper.json").unlink()
    out = run_concept_links(copy, concepts, probes, parts=("mapper",), **FAST)
    assert "mapper" in out["skipped"] and "mapper" not in out
    with pytest.raises(DeepProfileError, match="does not take"):
        run_concept_links(copy, concepts, probes, n_permutation=3)
    with pytest.raises(DeepProfileError, match="Unknown part"):
        run_concept_links(copy, concepts, probes, parts=("maper",))


def test_mapper_pages_get_a_colour_per_concept(shapes_run):
    path, concepts, probes, _ = shapes_run
    out = run_concept_links(path, concepts, probes, parts=("mapper",), **FAST)
    page = (path / out["mapper"]["pages"]["layer1"]).read_text()
    assert all(f"concept {name}" in page for name in concepts.names)


def test_run_mapper_draws_a_saved_concept_set(shapes_run, tmp_path):
    import shutil

    path, concepts, _, _ = shapes_run
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    concepts.save(copy)
    result = _run_mapper(copy, layers=["layer2"], thumbnails=False, quiet=True, intervals=6,
                         overlap=0.3, min_samples=2)
    assert "concept marker" in (copy / result.pages["layer2"]).read_text()


def test_a_concept_set_of_another_store_is_not_drawn(shapes_run, tmp_path):
    import shutil

    from deepprofile.concepts.sets import array_concept

    path, _, _, store = shapes_run
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    array_concept("longer", np.ones(store.n_samples + 5, bool)).save(copy)
    result = _run_mapper(copy, layers=["layer2"], thumbnails=False, quiet=True, intervals=6,
                         overlap=0.3, min_samples=2)
    assert "concept longer" not in (copy / result.pages["layer2"]).read_text()
