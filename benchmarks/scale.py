"""Large runs: capture N procedural ``shapes`` images, then topology and mapper on the cloud.

For each ``--sizes`` N, in a fresh subprocess (so that peak RSS is per size): capture N
``shapes`` images (3x32x32, rendered on the fly) with the demo ``small_resnet`` (random
init) into a store: ``mean`` of layer1, layer2 (and layer3 unless flattened) and ``flatten`` of
``--flat-layer`` (layer3);
report images/s and the process's peak RSS (``ru_maxrss``), which should stay flat in N
(chunks are streamed to disk, the dataset's image cache is bounded). Then, on the
largest store, in another subprocess: topology (Vietoris-Rips H0/H1 with giotto-ph on a
``--topology-points`` subsample of the ``--cloud-layer`` cloud, cutoff at the 0.2
quantile of pairwise distances) and mapper (kmapper through ``MapperGraph``, l2norm
lens, DBSCAN with the knee eps) on *all* points of that cloud, with their times.

    python benchmarks/scale.py --sizes 5000 50000 [--workdir DIR] [--keep]

Prints one JSON object; progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEAN_LAYERS = ["layer1", "layer2", "layer3"]  # minus the flattened one


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def capture_case(n: int, path: Path, flat_layer: str, batch_size: int, threads: int) -> dict:
    import torch

    from deepprofile.capture import capture_to_store
    from deepprofile.data.shapes import ShapesDataset
    from deepprofile.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=4, in_channels=3).eval()
    dataset = ShapesDataset(n=n, seed=0)
    reductions = {name: "mean" for name in MEAN_LAYERS if name != flat_layer}
    reductions[flat_layer] = "flatten"
    before = _rss_mb()
    t0 = time.perf_counter()
    store = capture_to_store(model, dataset, list(reductions), path, reductions=reductions,
                             batch_size=batch_size, chunk_size=4 * batch_size, quiet=True,
                             overwrite=True)
    seconds = time.perf_counter() - t0
    peak = _rss_mb()  # before anything reads the store back
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"n": n, "seconds": round(seconds, 1), "images_per_s": round(n / seconds, 1),
            "peak_rss_mb": peak, "rss_before_capture_mb": before,
            "store_mb": round(size / 2**20, 1),
            "flat_shape": list(store.output_shape(flat_layer))}


def analysis_case(path: Path, layer: str, topology_points: int, threads: int) -> dict:
    from deepprofile.mapper.graph import MapperGraph
    from deepprofile.topology.clouds import clouds_from_store
    from deepprofile.topology.persistence import VietorisRips

    out: dict = {"layer": layer}
    t0 = time.perf_counter()
    full = clouds_from_store(path, [layer], kind="image", n_points=None)[layer]
    out["cloud_points"], out["cloud_dim"] = int(len(full.points)), int(full.points.shape[1])
    out["cloud_seconds"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    sub = clouds_from_store(path, [layer], kind="image", n_points=topology_points)[layer]
    vr = VietorisRips((0, 1), cutoff_quantile=0.2, n_threads=threads)
    diagrams = vr.compute(sub)
    out["topology"] = {"points": int(len(sub.points)),
                       "seconds": round(time.perf_counter() - t0, 2),
                       "n_features": {int(d): int(len(diagrams[d])) for d in diagrams.dims}}

    t0 = time.perf_counter()
    mapper = MapperGraph(seed=0).fit(full.points, labels=full.labels, layer=layer)
    res = mapper.result_
    out["mapper"] = {"points": int(len(full.points)), "seconds": round(time.perf_counter() - t0, 2),
                     "nodes": int(len(res.nodes)), "timings": {
                         k: round(float(v), 2) for k, v in (mapper.timings_ or {}).items()},
                     "eps": None if mapper.eps_ is None else float(mapper.eps_)}
    out["peak_rss_mb"] = _rss_mb()
    return out


def _sub(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr[-2000:], "cmd": " ".join(cmd)}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--flat-layer", default="layer3")
    parser.add_argument("--cloud-layer", default="layer2")
    parser.add_argument("--topology-points", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--skip-analysis", action="store_true")
    parser.add_argument("--_capture", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_analysis", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._capture:
        print(json.dumps(capture_case(args._capture, args._path, args.flat_layer,
                                      args.batch_size, args.threads)))
        return
    if args._analysis:
        print(json.dumps(analysis_case(args._path, args.cloud_layer, args.topology_points,
                                       args.threads)))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="deepprofile-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--flat-layer", args.flat_layer, "--batch-size", str(args.batch_size),
              "--threads", str(args.threads)]
    t_all = time.perf_counter()
    captures = []
    for n in args.sizes:
        row = _sub(["--_capture", str(n), "--_path", str(work / f"shapes_{n}.zarr"), *common])
        captures.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    analysis = None
    largest = max(args.sizes)
    if not args.skip_analysis:
        analysis = _sub(["--_analysis", "--_path", str(work / f"shapes_{largest}.zarr"),
                         "--cloud-layer", args.cloud_layer, "--topology-points",
                         str(args.topology_points), "--threads", str(args.threads)])
        print(json.dumps(analysis), file=sys.stderr, flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ok = [c for c in captures if "peak_rss_mb" in c]
    print(json.dumps({
        "benchmark": "scale", "model": "small_resnet (random init)",
        "dataset": "shapes 3x32x32", "mean_layers": MEAN_LAYERS, "flat_layer": args.flat_layer,
        "batch_size": args.batch_size, "threads": args.threads, "cpus": os.cpu_count(),
        "captures": captures,
        "peak_rss_ratio_largest_over_smallest":
            round(ok[-1]["peak_rss_mb"] / ok[0]["peak_rss_mb"], 3) if len(ok) > 1 else None,
        "analysis_on": largest, "analysis": analysis,
        "seconds_total": round(time.perf_counter() - t_all, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
