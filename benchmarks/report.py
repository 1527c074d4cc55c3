"""Report benchmark: build time and size of the self-contained report, against the size the
same figures would take if each carried its own plotly.js (the naive offline page), the
time of a two-run comparison, and the report of a 54-layer model.

    python benchmarks/report.py [RUN_DIR [RUN_DIR_B]]     # small runs + the ResNet-50 run
    python benchmarks/report.py --resnet50                # only the ResNet-50 run

Without run folders it makes two runs (random-init SmallResNet, seeds 0 and 1, 200 digits
test images, mean + max_position stores) with topology, mapper and spectral results in a
temporary folder. The ResNet-50 run (issue 18's scale: 54 weight layers) is a torchvision
resnet50 with seeded random weights and 4 classes, built here (nothing is downloaded), on
``N50`` procedural 32-pixel shapes images, with capture, topology, mapper, spectral and a
small attribution run; its report's size, figure and image counts and the bytes of each
section are measured, and so are the bytes of a 4 x 9 grid of 224-pixel attribution maps
drawn both ways (plotly heatmaps, as before, and the inline PNG images used now).
Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def make_run(base: Path, seed: int, analyses: bool) -> Path:
    import torch

    from deepprofile.data import load_dataset
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.models import SmallResNet, load_model, save_checkpoint
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.topology.pipeline import run_topology
    from deepprofile.workflow import capture_run

    torch.manual_seed(seed)
    ckpt = save_checkpoint(base / f"m{seed}.pt", SmallResNet(in_channels=1), "small_resnet",
                           {"in_channels": 1})
    model, info = load_model(ckpt)
    ds = load_dataset("digits", split="test")
    run = base / f"run{seed}"
    for red, store in (("mean", "activations.zarr"), ("max_position", "activations_maxpos.zarr")):
        capture_run(model, ds, run, ["stem", "layer*"], reductions=red, store_name=store,
                    model_info=info.to_dict(), checkpoint=str(ckpt), quiet=True,
                    indices=range(200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_mapper(run, quiet=True)
    if analyses:
        run_topology(run, n_points=200, quiet=True)
        from deepprofile.rundir import RunDir

        run_spectral(model, run, store=RunDir(run).store(), quiet=True)
    return run


N50 = 48  # images of the ResNet-50 run
TARGET_BYTES = 8_000_000  # issue 18: a ResNet-50 report under 8 MB


def section_bytes(html: str) -> dict[str, int]:
    """Bytes of each ``<section id=...>`` of a report page."""
    import re

    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<section id="([^"]+)"', html)]
    out = {}
    for k, (at, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else html.find("<footer", at)
        out[name] = len(html[at:end].encode())
    return out


def resnet50_run(base: Path) -> tuple[Path, dict[str, float]]:
    """A 54-weight-layer run: random-init torchvision resnet50 (4 classes) on N50 shapes
    images, every analysis at small settings; returns the folder and seconds per step."""
    import torch

    from deepprofile.attribution import run_attribution
    from deepprofile.data import load_dataset
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.models import build_model, load_model, save_checkpoint
    from deepprofile.rundir import RunDir
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.topology.pipeline import run_topology
    from deepprofile.workflow import capture_run

    times: dict[str, float] = {}
    torch.manual_seed(0)
    ckpt = save_checkpoint(base / "resnet50.pt", build_model("resnet50", num_classes=4),
                           "resnet50", {}, num_classes=4)
    model, info = load_model(ckpt)
    model.eval()
    ds = load_dataset("shapes", split="test", n=N50)
    run = base / "resnet50_run"
    t = time.perf_counter()
    capture_run(model, ds, run, ["layer1", "layer2", "layer3", "layer4"], reductions="mean",
                model_info=info.to_dict(), checkpoint=str(ckpt), quiet=True, batch_size=16)
    times["capture_s"] = time.perf_counter() - t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        run_topology(run, cloud="image", n_points=N50, quiet=True, sensitivity_k=(0, 1))
        times["topology_s"] = time.perf_counter() - t
        t = time.perf_counter()
        run_mapper(run, quiet=True, intervals=6)
        times["mapper_s"] = time.perf_counter() - t
        t = time.perf_counter()
        run_spectral(model, run, dataset=ds, store=RunDir(run).store(), quiet=True,
                     max_projection_layers=1, model_info=info.to_dict())
        times["spectral_s"] = time.perf_counter() - t
        t = time.perf_counter()
        run_attribution(model, run, ds, n_images=4, sigmas=(0.0, 0.1), n_draws=1, n_steps=4,
                        robust_images=1, sensitivity_samples=1, sensitivity_images=1,
                        n_reference=N50, accuracy_images=8, n_examples=4, quiet=True)
        times["attribution_s"] = time.perf_counter() - t
    return run, times


def grid_bytes_224() -> dict[str, int]:
    """Bytes of a 4 x 9 grid of 224-pixel maps: plotly heatmaps (the old report) against
    the inline PNG images of the report now (same random maps, rounded like the results)."""
    import numpy as np

    from deepprofile.report import figures as F
    from deepprofile.report.images import map_data_uri

    rng = np.random.default_rng(0)
    maps = [rng.random((224, 224)).round(3) for _ in range(36)]
    fig = F.image_grid(maps, cols=9)
    plotly_bytes = len(F.render(fig, "g").encode())
    png_bytes = sum(len(map_data_uri(m).encode()) for m in maps)
    return {"plotly_heatmaps_bytes": plotly_bytes, "inline_png_bytes": png_bytes}


def resnet50_report(tmp: Path) -> dict[str, object]:
    from deepprofile.report import build_report

    run, times = resnet50_run(tmp)
    t = time.perf_counter()
    path = build_report(run, tmp / "resnet50_report.html")
    times["report_s"] = time.perf_counter() - t
    html = path.read_text()
    spectral = json.loads((run / "results" / "spectral.json").read_text())
    size = path.stat().st_size
    return {
        "run": str(run), "weight_layers": len(spectral["trained"]["layers"]),
        "images": N50, "image_size": 32, "report_bytes": size,
        "under_8MB": size < TARGET_BYTES,
        "figures": html.count("Plotly.newPlot("),
        "inline_images": html.count('<img src="data:image/png;base64,'),
        "section_bytes": section_bytes(html), "seconds": times,
        "attribution_grid_4x9_224px": grid_bytes_224(),
    }


def main() -> None:
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from deepprofile.compare import compare_runs
    from deepprofile.report import build_comparison_report, build_report

    tmp = Path(tempfile.mkdtemp(prefix="dp_report_bench_"))
    if "--resnet50" in sys.argv[1:]:
        print(json.dumps({"resnet50": resnet50_report(tmp)}, indent=1))
        return
    args = [Path(a) for a in sys.argv[1:]]
    run_a = args[0] if args else make_run(tmp, 0, analyses=True)
    run_b = args[1] if len(args) > 1 else (None if args else make_run(tmp, 1, analyses=False))

    build_report(run_a, tmp / "warmup.html")  # imports (plotly, torch for the MP law)
    times = []
    for i in range(3):
        t = time.perf_counter()
        path = build_report(run_a, tmp / f"report{i}.html")
        times.append(time.perf_counter() - t)
    html = path.read_text()
    n_figs = html.count("Plotly.newPlot(")
    js = len(get_plotlyjs().encode())
    size = path.stat().st_size
    # the naive offline page: every figure rendered with include_plotlyjs=True
    one = pio.to_html(go.Figure(), full_html=False, include_plotlyjs=True)
    naive = size + (n_figs - 1) * len(one.encode()) if n_figs else size
    out = {
        "run": str(run_a), "figures": n_figs,
        "build_seconds_median": sorted(times)[1], "build_seconds_runs": times,
        "report_bytes": size, "plotlyjs_bytes": js,
        "figures_bytes": size - js,
        "naive_per_figure_plotlyjs_bytes": naive,
        "size_ratio_naive_over_report": naive / size,
    }
    if run_b is not None:
        t = time.perf_counter()
        compare_runs(run_a, run_b, tmp / "compare", quiet=True, n_points=200)
        out["compare_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        cpath = build_comparison_report(tmp / "compare")
        out["comparison_report_seconds"] = time.perf_counter() - t
        out["comparison_report_bytes"] = cpath.stat().st_size
    out["resnet50"] = resnet50_report(tmp)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
