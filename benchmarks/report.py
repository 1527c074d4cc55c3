"""Report benchmark: build time and size of the self-contained report, against the size the
same figures would take if each carried its own plotly.js (the naive offline page), and the
time of a two-run comparison.

    python benchmarks/report.py [RUN_DIR [RUN_DIR_B]]

Without arguments it makes two runs (random-init SmallResNet, seeds 0 and 1, 200 digits test
images, mean + max_position stores) with topology, mapper and spectral results in a temporary
folder. Prints one JSON object.
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


def main() -> None:
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from deepprofile.compare import compare_runs
    from deepprofile.report import build_comparison_report, build_report

    tmp = Path(tempfile.mkdtemp(prefix="dp_report_bench_"))
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
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
