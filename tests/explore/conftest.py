"""Tiny run folders for the explorer tests, made once per session.

Run A: a seeded random-init SmallResNet captured (mean reduction) on the first 160
digits test images, with a concept set ("even digit", "below 5"; the files
``concepts/concept_set.npz`` + ``.json`` as ConceptSet.save writes them) and a small
attribution result (saliency maps of 12 images, laid out as ``run_attribution`` does).
Run B: another seed on the same images. "empty": a run folder without activations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

N_IMAGES = 160
LAYERS = ["stem", "layer1", "layer2", "layer3"]
ATTR_ROWS = np.arange(0, N_IMAGES, 13)[:12]


def _capture(run: Path, seed: int, base: Path) -> None:
    from deepprofile.data import load_dataset
    from deepprofile.models import SmallResNet, load_model, save_checkpoint
    from deepprofile.workflow import capture_run

    torch.manual_seed(seed)
    ckpt = save_checkpoint(base / f"seed{seed}.pt", SmallResNet(in_channels=1), "small_resnet",
                           {"in_channels": 1})
    model, info = load_model(ckpt)
    capture_run(model, load_dataset("digits", split="test"), run, LAYERS, reductions="mean",
                model_info=info.to_dict(), checkpoint=str(ckpt), quiet=True,
                indices=range(N_IMAGES), batch_size=80)


def _extras(run: Path) -> None:
    from deepprofile.rundir import RunDir

    store = RunDir(run).store()
    labels = np.asarray(store.labels)
    (run / "concepts").mkdir()
    # the layout of deepprofile.concepts.sets.ConceptSet.save: masks in the npz, names in json
    np.savez_compressed(run / "concepts" / "concept_set.npz",
                        masks=np.stack([labels % 2 == 0, labels < 5]))
    (run / "concepts" / "concept_set.json").write_text(json.dumps({
        "names": ["even digit", "below 5"], "n_samples": len(labels),
        "sources": {"even digit": {"kind": "classes"}, "below 5": {"kind": "classes"}},
        "folders": []}))
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(len(ATTR_ROWS), 1, 32, 32)).astype(np.float32)
    (run / "attribution").mkdir()
    np.save(run / "attribution" / "saliency.npy", maps)
    RunDir(run).write_result("attribution", {
        "kind": "attribution",
        "images": {"store_rows": ATTR_ROWS.tolist(),
                   "dataset_indices": np.asarray(store.indices)[ATTR_ROWS].tolist()},
        "methods": {"saliency": {"label": "saliency", "file": "attribution/saliency.npy"}},
    })


@pytest.fixture(scope="session")
def explore_runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("explore_runs")
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        run = base / f"seed{seed}"
        _capture(run, seed, base)
        runs[name] = run
    _extras(runs["a"])
    empty = base / "no_activations"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"model": "none"}))
    runs["empty"] = empty
    return runs
