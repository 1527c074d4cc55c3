"""Benchmark: what keeping finished layers for resuming costs (``deepprofile/partial.py``).

Measures, in one process: a mapper graph of ``--points`` 16-D Gaussian points (10 labels)
built with ``MapperGraph(seed=0)``, then its layer file written (encode + atomic write) and
read back (check + decode); torchvision's resnet50 (random init, no download) weight spectra
(trained side) through ``run_spectral`` without a run folder (nothing kept) and with one
(every layer kept), best of ``--repeats``; and the size of the kept files.

Prints one JSON object. Run: ``python benchmarks/resume.py [--points 50000] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def mapper_case(points: int, folder: Path) -> dict:
    from deepprofile.mapper.graph import MapperGraph, MapperGraphResult
    from deepprofile.partial import LayerResults, encode

    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(points, 16)).astype(np.float32)
    labels = rng.integers(0, 10, points)
    start = time.perf_counter()
    result = MapperGraph(seed=0).fit(cloud, labels=labels, layer="layer").result_
    build = time.perf_counter() - start
    saved = LayerResults.in_results(folder / "results", "mapper")
    slot = saved.slot("graphs", "layer", {"points": points})
    start = time.perf_counter()
    text = encode(result)
    slot.save(text)
    write = time.perf_counter() - start
    start = time.perf_counter()
    MapperGraphResult.from_dict(json.loads(slot.load()))
    read = time.perf_counter() - start
    saved.clear()
    return {"points": points, "build_s": round(build, 3), "write_s": round(write, 3),
            "read_s": round(read, 3), "file_mb": round(len(text) / 1e6, 2)}


def spectral_case(repeats: int, folder: Path) -> dict:
    import torch
    import torchvision

    from deepprofile.spectral.pipeline import run_spectral

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    times: dict[str, list[float]] = {"without_run_folder_s": [], "with_run_folder_s": []}
    size = 0
    for _ in range(repeats):
        for key, run_dir in (("without_run_folder_s", None),
                             ("with_run_folder_s", folder / "r50")):
            start = time.perf_counter()
            run_spectral(model, run_dir, quiet=True, compare_random_init=False)
            times[key].append(time.perf_counter() - start)
    partial = folder / "probe"
    from deepprofile.partial import LayerResults
    from deepprofile.spectral.rmt import WeightSpectrumAnalyzer

    saved = LayerResults.in_results(partial, "spectral")
    WeightSpectrumAnalyzer(compare_random_init=False).fit(model, saved=saved)
    size = sum(p.stat().st_size for p in (partial / ".partial").rglob("*.json"))
    saved.clear()
    return {"layers": 54, **{k: round(min(v), 3) for k, v in times.items()},
            "files_mb": round(size / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"mapper": mapper_case(args.points, Path(tmp)),
               "spectral_resnet50": spectral_case(args.repeats, Path(tmp)),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average": [round(v, 1) for v in os.getloadavg()]}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
