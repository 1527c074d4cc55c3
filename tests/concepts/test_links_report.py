"""The report's concepts section: every part from real results, and graceful when parts miss."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from deepprofile.data import ShapesDataset
from deepprofile.models import SmallResNet, save_checkpoint
from deepprofile.report import build_report
from deepprofile.workflow import capture_run

SPURIOUS = {
    "config": {"spurious_class": 0}, "area_share": 9 / 1024, "seconds": 1.0,
    "spurious": {"attribution_share": 0.2, "attribution_ratio": 22.8,
                 "probe_accuracy": {"stem": 0.7, "layer1": 0.99}, "tcav_score": {"layer1": 0.9},
                 "tcav_p": {"layer1": 1e-4}, "accuracy_marked_other": 0.4,
                 "accuracy_unmarked_other": 0.95},
    "clean": {"attribution_share": 0.01, "attribution_ratio": 1.1,
              "probe_accuracy": {"stem": 0.6, "layer1": 0.9}, "tcav_score": {"layer1": 0.5},
              "tcav_p": {"layer1": 0.6}, "accuracy_marked_other": 0.94,
              "accuracy_unmarked_other": 0.95},
    "detection": {"attribution": {"spurious": True, "clean": False},
                  "probe": {"spurious": True, "clean": True},
                  "tcav": {"spurious": True, "clean": False},
                  "behaviour": {"spurious": True, "clean": False}},
}


@pytest.fixture(scope="module")
def concepts_run(tmp_path_factory):
    from deepprofile.concepts.pipeline import run_concepts
    from deepprofile.concepts.sets import shapes_concepts
    from deepprofile.mapper.pipeline import run_mapper

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    kwargs = {"in_channels": 3, "widths": (4, 6, 8)}
    model = SmallResNet(num_classes=4, **kwargs).eval()
    root = tmp_path_factory.mktemp("links_report")
    ckpt = save_checkpoint(root / "model.pt", model, "small_resnet", kwargs)
    dataset = ShapesDataset(n=60, seed=5, marker_base_rate=0.5)
    run, store = capture_run(model, dataset, root / "run", ["stem", "layer1"],
                             checkpoint=str(ckpt), quiet=True)
    run_mapper(run.path, thumbnails=False, quiet=True, intervals=6, min_samples=2)
    run_concepts(run.path, shapes_concepts(store, include=["marker", "size"]), model=model,
                 dataset=dataset, tcav_concepts=["marker"], tcav_layers=["layer1"],
                 tcav_classes=[0], n_shuffles=2, n_tcav_images=10, n_tcav_inputs=10,
                 n_splits=3, quiet=True)
    (run.path / "results" / "spurious.json").write_text(json.dumps(SPURIOUS))
    torch.set_num_threads(threads)
    return run.path


def _section(html: str) -> str:
    start = html.index('id="concepts"')
    return html[start:]


def test_concepts_section_renders_every_part(concepts_run, tmp_path):
    data = json.loads((concepts_run / "results" / "concepts.json").read_text())
    assert set(data["structures"]) >= {"mapper", "topology", "spectra", "attributions"}
    html = _section(build_report(concepts_run, tmp_path / "r.html", strict=True).read_text())
    for title in ("Probe accuracy with controls", "TCAV: does the concept push the class?",
                  "Concept purity by depth", "Concept topology (permutation test)",
                  "Probe directions vs singular vectors", "Where each concept probe looks",
                  "Spurious-signal detection"):
        assert title in html, title
    # the maps are inline PNG images, not plotly heatmaps: two per example image
    grid = html[html.index("Where each concept probe looks"):]
    grid = grid[:grid.index("</table>")]
    n_maps = sum(len(np.load(concepts_run / m["maps"])["images"])
                 for m in data["structures"]["attributions"]["maps"])
    assert n_maps > 0
    assert len(re.findall(r'<img src="data:image/png;base64,', grid)) == 2 * n_maps
    assert "22.8× area" in html and "false alarm" in html


def test_concepts_section_without_optional_parts(concepts_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(concepts_run, copy)
    path = copy / "results" / "concepts.json"
    data = json.loads(path.read_text())
    data["tcav"] = None
    data["structures"] = {"skipped": {"mapper": "no graphs"},
                          "attributions": {"maps": [{"concept": "marker", "layer": "stem",
                                                     "maps": "concepts/maps/gone.npz"}]}}
    path.write_text(json.dumps(data))
    (copy / "results" / "spurious.json").unlink()
    html = _section(build_report(copy, tmp_path / "r.html", strict=True).read_text())
    assert "Probe accuracy with controls" in html
    assert "does the concept push the class" not in html
    assert "Spurious-signal detection" not in html
    assert "mapper link not computed: no graphs" in html
    path.unlink()  # no concepts at all: no section
    (copy / "results" / "spurious.json").write_text(json.dumps(SPURIOUS))
    html = build_report(copy, tmp_path / "r2.html", strict=True).read_text()
    assert "Spurious-signal detection" in _section(html)
