"""Topology, mapper or spectral on a tiny run folder as a process of its own, for the
resume tests (test_resume_layers.py), which kill it with ``DEEPPROFILE_TEST_KILL_ONCE``.

Usage: python resume_worker.py ANALYSIS:RUN_DIR [ANALYSIS:RUN_DIR ...]

Runs each analysis in turn and prints one JSON line: for each argument, how many times each
per-layer function ran in this process (counted by wrapping the module-level functions the
pipelines call), so a test can tell which layers a rerun computed.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections import Counter
from pathlib import Path

import torch

LAYERS = ["stem", "layer1", "layer2", "layer3"]
PER_LAYER = {
    "topology": [("deepprofile.topology.pipeline", "_persistence_layer"),
                 ("deepprofile.topology.pipeline", "_sweep_layer")],
    "mapper": [("deepprofile.mapper.pipeline", "_graph_task")],
    "spectral": [("deepprofile.spectral.rmt", "_spectrum_task"),
                 ("deepprofile.spectral.pipeline", "_stored_projection_task"),
                 ("deepprofile.spectral.pipeline", "project_dataset"),
                 ("deepprofile.spectral.pipeline", "_operator_task")],
}


def build_model() -> torch.nn.Module:
    """The run's model: SmallResNet (3 channels, 4 classes, widths 4-8-8) from seed 0."""
    from deepprofile.models import SmallResNet

    torch.manual_seed(0)
    return SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8)).eval()


def make_run(run_dir: Path) -> None:
    """Capture 40 shapes images: four blocks (max_position) and one flatten conv layer."""
    from deepprofile.capture import capture_to_store
    from deepprofile.data import ShapesDataset

    model, data = build_model(), ShapesDataset(n=40, seed=3)
    capture_to_store(model, data, LAYERS, run_dir / "activations.zarr",
                     reductions="max_position", quiet=True)
    capture_to_store(model, data, ["layer2.branch.3"], run_dir / "flat.zarr",
                     reductions="flatten", quiet=True)


def run(analysis: str, run_dir: Path) -> None:
    """The analysis with the settings every resume test uses (results in ``run_dir``)."""
    if analysis == "topology":
        from deepprofile.topology import run_topology

        run_topology(run_dir, n_points=30, quiet=True, metrics=("bottleneck",),
                     cka=("linear",), sensitivity_k=(0, 1))
    elif analysis == "mapper":
        from deepprofile.mapper.pipeline import run_mapper

        run_mapper(run_dir, quiet=True, intervals=6, thumbnails=False, merge=False)
    elif analysis == "spectral":
        from deepprofile.capture import ActivationStore
        from deepprofile.spectral.pipeline import run_spectral

        run_spectral(build_model(), run_dir, layers=["layer1", "layer2.branch.3"], seed=1,
                     quiet=True, store=ActivationStore.open(run_dir / "flat.zarr"))
    else:
        raise SystemExit(f"unknown analysis {analysis!r}")


def counting(counts: Counter) -> None:
    """Wrap every per-layer function so each call adds to ``counts`` (``project_dataset``
    adds the number of layers its forward pass projects)."""
    for functions in PER_LAYER.values():
        for module_name, name in functions:
            module = importlib.import_module(module_name)
            original = getattr(module, name)

            def wrapper(*args, _original=original, _name=name, **kwargs):
                counts[_name] += len(args[2]) if _name == "project_dataset" else 1
                return _original(*args, **kwargs)

            setattr(module, name, wrapper)


def main(pairs: list[str]) -> None:
    torch.set_num_threads(1)
    counts: Counter = Counter()
    counting(counts)
    report = []
    for pair in pairs:
        analysis, _, run_dir = pair.partition(":")
        counts.clear()
        run(analysis, Path(run_dir))
        report.append(dict(counts))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
