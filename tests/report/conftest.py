"""Run folders for the report tests, made once per session, and HTML helpers.

Run A: a seeded random-init SmallResNet captured on the first 200 digits test images
(mean and max_position stores) with every analysis (topology, mapper, spectral,
attribution) at small settings. Run B: another seed, same images, with mapper graphs.
The comparison of A and B is also made once.
"""

from __future__ import annotations

import json
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

N_IMAGES = 200
LAYERS = ["stem", "layer*"]


def _capture(run: Path, ckpt: Path, dataset) -> None:
    from deepprofile.models import load_model
    from deepprofile.workflow import capture_run

    model, info = load_model(ckpt)
    for reduction, store in (("mean", "activations.zarr"),
                             ("max_position", "activations_maxpos.zarr")):
        capture_run(model, dataset, run, LAYERS, reductions=reduction, store_name=store,
                    model_info=info.to_dict(), checkpoint=str(ckpt), quiet=True,
                    indices=range(N_IMAGES), batch_size=100)


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> dict[str, Path]:
    from deepprofile.attribution import run_attribution
    from deepprofile.attribution.pipeline import node_members_from_mapper
    from deepprofile.data import load_dataset
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.models import SmallResNet, load_model, save_checkpoint
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.topology.pipeline import run_topology

    base = tmp_path_factory.mktemp("report_runs")
    dataset = load_dataset("digits", split="test")
    runs: dict[str, Path] = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        ckpt = save_checkpoint(base / f"{name}.pt", SmallResNet(in_channels=1),
                               "small_resnet", {"in_channels": 1})
        run = base / f"run_{name}"
        _capture(run, ckpt, dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_mapper(run, layers=["layer2", "layer3"], quiet=True)
        runs[name] = run
        runs[f"ckpt_{name}"] = ckpt
    run_a = runs["a"]
    model, info = load_model(runs["ckpt_a"])
    run_topology(run_a, n_points=100, quiet=True, sensitivity_k=(0, 1, 2))
    run_spectral(model, run_a, dataset=None, store=load_store(run_a), quiet=True,
                 max_projection_layers=2, model_info=info.to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_attribution(
            model, run_a, dataset, n_images=4, sigmas=(0.0, 0.1), n_draws=2, n_steps=4,
            robust_images=2, sensitivity_samples=1, sensitivity_images=1, n_reference=50,
            accuracy_images=32, node_members=node_members_from_mapper(run_a, "layer3"),
            node_layer="layer3", max_per_node=2, n_examples=2, quiet=True,
        )
    return runs


def load_store(run: Path):
    from deepprofile.rundir import RunDir

    return RunDir(run).store()


@pytest.fixture(scope="session")
def comparison(report_runs, tmp_path_factory):
    from deepprofile.compare import compare_runs

    out = tmp_path_factory.mktemp("compare") / "a_vs_b"
    result = compare_runs(report_runs["a"], report_runs["b"], out, quiet=True, n_points=100)
    return out, result


# --------------------------------------------------------------------------------------
# HTML parsing and hostile names (shared through fixtures: tests import nothing from here)
# --------------------------------------------------------------------------------------
EVIL_CLASS = '<script>alert("class")</script>'
EVIL_LAYER = 'layer3</script><img src=x onerror=alert("layer")>'


class Page(HTMLParser):
    """Ids, ``href``s, script elements and plotly divs of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.toc_hrefs: list[str] = []
        self.scripts: list[dict[str, Any]] = []
        self.plotly_divs: list[str] = []
        self.iframes: list[str] = []
        self.images: list[dict[str, Any]] = []
        self._in_nav = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a and a["id"]:
            self.ids.append(a["id"])
        if tag == "nav":
            self._in_nav += 1
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
            if self._in_nav:
                self.toc_hrefs.append(a["href"])
        if tag == "script":
            self.scripts.append(a)
        if tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.plotly_divs.append(a.get("id") or "")
        if tag == "iframe":
            self.iframes.append(a.get("data-src") or a.get("src") or "")
        if tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._in_nav -= 1


def _rename(obj: Any) -> Any:
    """Rename layer ``layer3`` and class ``0`` to hostile strings wherever the report may
    show them (keys, values, class-name lists, per-class dicts)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = EVIL_LAYER if k == "layer3" else k
            if k in ("class_names", "classes") and isinstance(v, list):
                v = [EVIL_CLASS if x == "0" else x for x in v]
            if k in ("edges", "sizes", "class_influential") and isinstance(v, dict):
                v = {(EVIL_CLASS if kk == "0" else kk): vv for kk, vv in v.items()}
            out[key] = _rename(v)
        return out
    if isinstance(obj, list):
        return [_rename(v) for v in obj]
    if obj == "layer3":
        return EVIL_LAYER
    return obj


def hostile_copy(run: Path, dest: Path) -> Path:
    """A copy of ``run`` (overview, results, mapper pages; no store) whose layer ``layer3``
    and class ``0`` carry script-injection strings."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results").mkdir(exist_ok=True)
    for src in [run / "run.json", *sorted((run / "results").glob("*.json"))]:
        target = dest / src.relative_to(run)
        target.write_text(json.dumps(_rename(json.loads(src.read_text()))))
    if (run / "mapper").is_dir():
        shutil.copytree(run / "mapper", dest / "mapper", dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def hostile_run(report_runs, tmp_path_factory) -> Path:
    return hostile_copy(report_runs["a"], tmp_path_factory.mktemp("hostile") / "run")


@pytest.fixture(scope="session")
def evil() -> dict[str, str]:
    return {"class": EVIL_CLASS, "layer": EVIL_LAYER}


@pytest.fixture(scope="session")
def parse_page():
    return Page
