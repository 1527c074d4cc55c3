"""``deepprofile demo``: the whole pipeline on the bundled digits, end to end.

1. train the demo CNN (SmallResNet) on digits for two seeds (skipped when the
   checkpoints exist: the training log's configuration must match);
2. capture stem/layer1/layer2/layer3 on the test split, mean-pooled and at the
   max-L2 position (Purvine et al.);
3. topology (persistence, diagram distances, CKA), mapper graphs, spectral
   analysis of the weights for both seeds, attributions for the first;
4. compare the two seeds and write ``reports/demo/index.html`` (the inspection
   report of the first seed) and ``reports/demo/compare.html``;
5. train the demo CNN on ``shapes`` twice, with a marker planted on one class and
   without (``reports/demo/shapes/{spurious,clean}``), probe every ground-truth concept
   in both, and score spurious-signal detectors against how the models behave
   (``reports/demo/shapes/results/spurious.json``, ``reports/demo/shapes.html``).

Every step writes JSON under ``reports/demo/seed*/results``; the reports are
rendered from those files only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepprofile.config import store_name_for
from deepprofile.data import load_dataset
from deepprofile.models import load_model
from deepprofile.models.train import TrainConfig, train
from deepprofile.results import read_json

DEMO_LAYERS = ("stem", "layer1", "layer2", "layer3")


def demo_config(seed: int, fast: bool) -> TrainConfig:
    """The demo's training configuration (``fast``: fewer epochs, for tests).

    ``fast`` trains 3 epochs: at 2 the accuracy still hangs on float rounding (seed 1 gave
    0.66 with two torch threads and 0.34 with one), at 3 it is 0.92-0.94 with either.
    """
    return TrainConfig(epochs=3 if fast else 8, seed=seed, n_checkpoints=2 if fast else 4)


def train_if_needed(config: TrainConfig, out: Path, device: torch.device, quiet: bool,
                    echo: Callable[[str], None]) -> Path:
    """Train unless ``out/final.pt`` exists from a finished run with the same config."""
    final = out / "final.pt"
    log_path = out / "train_log.json"
    if final.exists() and log_path.exists():
        log = read_json(log_path)
        if log.get("finished") and log.get("config") == config.to_dict():
            acc = log["result"]["test_accuracy"]
            echo(f"  using trained model {final} (test accuracy {acc:.4f})")
            return final
    result = train(config, out, device=device, quiet=quiet)
    echo(f"  trained seed {config.seed}: test accuracy {result.test_accuracy:.4f} "
         f"in {result.seconds:.1f} s ({config.epochs} epochs)")
    return Path(result.final_checkpoint)


def prepare_run(out: Path, seed: int, fast: bool, device: torch.device, quiet: bool,
                echo: Callable[[str], None]) -> dict[str, Any]:
    """Train (if needed) and capture one seed; return model, dataset and run folder."""
    from deepprofile.workflow import capture_run

    checkpoint = train_if_needed(demo_config(seed, fast), out / "models" / f"seed{seed}",
                                 device, quiet, echo)
    model, info = load_model(checkpoint, device=device)
    dataset = load_dataset("digits", split="test")
    run_dir = out / f"seed{seed}"
    common = dict(model_info=info.to_dict(), checkpoint=str(checkpoint), device=device,
                  seed=seed, overwrite=True, quiet=quiet)
    run, store = capture_run(model, dataset, run_dir, DEMO_LAYERS, reductions="mean", **common)
    capture_run(model, dataset, run_dir, DEMO_LAYERS, reductions="max_position",
                store_name=store_name_for("max_position"), **common)
    echo(f"  captured {store.n_samples} test images, layers {', '.join(store.layers)} "
         f"-> {run.path} (accuracy {store.accuracy:.4f})")
    for name, row in store.summary()["layers"].items():
        echo(f"    {name:8s} output {'x'.join(map(str, row['output_shape'])):>9s}  "
             f"stored {row['reduction']} {'x'.join(map(str, row['stored_shape']))}")
    return {"model": model, "info": info, "dataset": dataset, "run": run, "store": store}


def run_demo(out_dir: str | Path = "reports/demo", *, fast: bool = False, seed: int = 0,
             device: torch.device | str = "cpu", quiet: bool = False,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo and return the paths it wrote (also printed through ``echo``)."""
    out = Path(out_dir)
    device = torch.device(device)
    t0 = time.perf_counter()
    echo(f"deepprofile demo -> {out}")
    runs = {}
    for s in (seed, seed + 1):
        echo(f"[seed {s}]")
        runs[s] = prepare_run(out, s, fast, device, quiet, echo)
        analyse(runs[s], fast=fast, seed=s, quiet=quiet, echo=echo,
                attribution=(s == seed))
    echo("[compare seeds]")
    from deepprofile.compare import compare_runs, summarize_comparison
    from deepprofile.report import build_comparison_report, build_report

    first, second = runs[seed]["run"].path, runs[seed + 1]["run"].path
    comparison = compare_runs(first, second, out / "compare", quiet=quiet,
                              n_points=300 if fast else 540, seed=seed)
    echo(summarize_comparison(comparison))
    compare_html = build_comparison_report(comparison, out / "compare.html")
    index = build_report(first, out / "index.html")
    shapes = shapes_pair(out, fast=fast, seed=seed, device=device, quiet=quiet, echo=echo)
    echo(f"report:     {index}")
    echo(f"comparison: {compare_html}")
    echo(f"shapes:     {shapes['report']}")
    echo(f"done in {time.perf_counter() - t0:.1f} s")
    return {"out": out, "runs": {s: r["run"].path for s, r in runs.items()}, "report": index,
            "compare": compare_html, "shapes": shapes}


def pair_config(seed: int, fast: bool):
    """The shapes spurious/clean pair of the demo (``fast``: tiny, for tests)."""
    from deepprofile.concepts.spurious import PairConfig

    if fast:
        return PairConfig(n_train=300, n_eval=160, epochs=2, lr=0.1, seed=seed,
                          n_attribution=8)
    return PairConfig(n_train=800, n_eval=400, epochs=6, lr=0.1, seed=seed)


def shapes_pair(out: Path, *, fast: bool, seed: int, device: torch.device, quiet: bool,
                echo: Callable[[str], None]) -> dict[str, Any]:
    """Train and analyse the shapes spurious/clean pair; compare their concept curves."""
    from deepprofile.compare import compare_runs
    from deepprofile.concepts.pipeline import load_concepts, summarize_concepts
    from deepprofile.concepts.spurious import run_spurious, summarize_spurious
    from deepprofile.report import build_report

    echo("[shapes: marker planted on one class vs clean control]")
    t = time.perf_counter()
    families = ("marker",) if fast else ("shape", "colour", "texture", "size", "marker")
    root = out / "shapes"
    pair = run_spurious(root, pair_config(seed, fast), device=device, quiet=quiet,
                        concept_families=families)
    echo(summarize_concepts(load_concepts(root / "spurious")))
    echo(summarize_spurious(pair) + f"  ({time.perf_counter() - t:.1f} s)")
    compare_runs(root / "spurious", root / "clean", root / "compare", quiet=quiet,
                 topology=False, mapper=False, spectral=False)
    report = build_report(root / "spurious", out / "shapes.html")
    return {"runs": {"spurious": root / "spurious", "clean": root / "clean"},
            "result": root / "results" / "spurious.json", "report": report}


def analyse(run: dict[str, Any], *, fast: bool, seed: int, quiet: bool,
            echo: Callable[[str], None], attribution: bool) -> None:
    """Topology, mapper, spectral (and attribution) on one captured run."""
    from deepprofile.mapper.pipeline import run_mapper, summarize_mapper
    from deepprofile.spectral.pipeline import run_spectral, summarize_spectral
    from deepprofile.topology.pipeline import run_topology, summarize_topology

    run_dir, model, dataset = run["run"].path, run["model"], run["dataset"]
    t = time.perf_counter()
    topo = run_topology(run_dir, cloud="max_position", n_points=300 if fast else 540,
                        seed=seed, quiet=quiet)
    echo(summarize_topology(topo) + f"  ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    mapper = run_mapper(run_dir, dataset=dataset, seed=seed, quiet=quiet)
    echo(summarize_mapper(mapper) + f"  ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    spectral = run_spectral(model, run_dir, dataset, list(DEMO_LAYERS), seed=seed, quiet=quiet)
    echo(summarize_spectral(spectral) + f"  ({time.perf_counter() - t:.1f} s)")
    if attribution:
        from deepprofile.attribution.pipeline import (
            node_members_from_mapper,
            run_attribution,
            summarize_attribution,
        )

        t = time.perf_counter()
        attr = run_attribution(model, run_dir, dataset, n_images=8 if fast else 16,
                               n_draws=4 if fast else 8, seed=seed, quiet=quiet,
                               node_members=node_members_from_mapper(run_dir, "layer3"),
                               node_layer="layer3")
        echo(summarize_attribution(attr) + f"  ({time.perf_counter() - t:.1f} s)")
