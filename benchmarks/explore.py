"""Benchmark: the explorer's recompute after a parameter change, and its page payload.

A synthetic run folder per size (10,000 and 50,000 points, 64-D: a seeded mixture of 10
Gaussian clusters, as in benchmarks/mapper.py) is written as an ActivationStore. After a
warm-up graph (which also reads the layer from the store once), each repeat changes the
number of intervals (a cache miss) and times what the explorer's draw callback does:
``RunData.graph`` (subsample, the package's ``MapperGraph.fit``), the node layout, the
cytoscape elements and their JSON. The reference, measured in the same run and order
alternating, is the package's ``MapperGraph(...).fit`` alone on the same array with the
same parameters: ``overhead_ratio`` says what the explorer adds on top of the mapper.
CPU seconds of the process (``*_cpu_s``) are reported beside the wall-clock ones: they
hardly change when other jobs share the cores, wall-clock times do (several-fold).
Also reported: the process's resident memory after each size and its peak so far (sizes
run smallest first, so the last peak is the largest size's; the process holds what an
explorer server holds: the run's data, the cache of graphs, the layout), a cache hit,
and the page payload (HTML, every script bundle, layout and callback graph, as the
browser fetches them on first load, plus the graph's elements JSON per size).
Prints one JSON object.

    python benchmarks/explore.py            # about a minute on 2 cores
    python benchmarks/explore.py --quick    # 2,000 and 5,000 points
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_run(path: Path, n: int, dim: int = 64, seed: int = 0) -> Path:
    """A run folder whose store holds one layer of ``n`` points (no dataset: no images)."""
    from deepprofile.capture.store import ActivationStore

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)) * 4.0
    spread = rng.uniform(0.5, 1.5, size=10)
    labels = rng.integers(0, 10, size=n)
    X = (centres[labels] + rng.normal(size=(n, dim)) * spread[labels, None]).astype(np.float32)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    chunk = 4096
    store = ActivationStore.create(
        path / "activations.zarr", config={"bench": n}, layer_shapes={"layer": (dim,)},
        reductions={"layer": "mean"}, output_shapes={"layer": (dim, 1, 1)}, n_samples=n,
        num_classes=10, chunk_size=chunk, metadata={"class_names": [str(c) for c in range(10)]})
    for start in range(0, n, chunk):
        s = slice(start, min(start + chunk, n))
        store.write_chunk(start, {"layers/layer": X[s], "labels": labels[s],
                                  "predictions": logits[s].argmax(1), "indices": np.arange(n)[s],
                                  "logits": logits[s]})
    return path


def bench(n: int, repeats: int, base: Path) -> dict:
    from deepprofile.explore.data import MapperParams, RunData
    from deepprofile.explore.elements import graph_elements
    from deepprofile.mapper import MapperGraph

    run = RunData.open(make_run(base / f"run{n}", n))
    column = run.columns()["label"]
    warm = MapperParams(intervals=40, overlap=0.3)
    t0 = time.perf_counter()
    run.graph("layer", warm)
    cold = time.perf_counter() - t0
    X = np.asarray(run.store.layer("layer"))
    labels, logits = run.labels, np.asarray(run.store.logits)

    def ours(p: MapperParams) -> tuple[float, int, int]:
        t, c = time.perf_counter(), time.process_time()
        view = run.graph("layer", p)
        graph_s.append(time.perf_counter() - t)
        payload = json.dumps(graph_elements(view, column, run.class_name))
        ours_cpu.append(time.process_time() - c)
        return time.perf_counter() - t, len(payload), view.result.stats.n_nodes

    def reference(p: MapperParams) -> float:
        t, c = time.perf_counter(), time.process_time()
        MapperGraph(**p.builder_kwargs()).fit(X, labels=labels, logits=logits)
        ref_cpu.append(time.process_time() - c)
        return time.perf_counter() - t

    ours_s, ref_s, payloads, nodes, graph_s = [], [], [], [], []
    ours_cpu: list[float] = []
    ref_cpu: list[float] = []
    for i in range(repeats):
        p = MapperParams(intervals=30 + 2 * i, overlap=0.3)  # a new parameter set each time
        if i % 2:
            ref_s.append(reference(p))
            s, size, k = ours(p)
        else:
            s, size, k = ours(p)
            ref_s.append(reference(p))
        ours_s.append(s)
        payloads.append(size)
        nodes.append(k)
    t = time.perf_counter()
    run.graph("layer", MapperParams(intervals=30, overlap=0.3))
    hit = time.perf_counter() - t
    return {
        "n_points": n,
        "first_graph_s": round(cold, 3),
        "param_change_s_min": round(min(ours_s), 3),
        "param_change_s_median": round(statistics.median(ours_s), 3),
        "of_which_graph_s_median": round(statistics.median(graph_s), 3),
        "of_which_layout_and_elements_s_median": round(
            statistics.median(ours_s) - statistics.median(graph_s), 3),
        "reference_mapper_fit_s_min": round(min(ref_s), 3),
        "reference_mapper_fit_s_median": round(statistics.median(ref_s), 3),
        "overhead_ratio_median": round(statistics.median(ours_s) / statistics.median(ref_s), 2),
        "param_change_cpu_s_median": round(statistics.median(ours_cpu), 3),
        "reference_cpu_s_median": round(statistics.median(ref_cpu), 3),
        "cache_hit_s": round(hit, 5),
        "nodes": nodes,
        "elements_json_bytes_median": int(statistics.median(payloads)),
        "under_1s": bool(statistics.median(ours_s) < 1.0),
    }


def page_payload(run_dir: Path) -> dict:
    """Bytes the browser fetches on first load (before any graph)."""
    from deepprofile.explore import create_app

    client = create_app(run_dir).server.test_client()
    html = client.get("/").get_data()
    sizes = {"html": len(html)}
    scripts = 0
    for url in re.findall(rb'src="(/[^"]+)"', html):
        scripts += len(client.get(url.decode()).get_data())
    sizes["scripts"] = scripts
    sizes["layout_json"] = len(client.get("/_dash-layout").get_data())
    sizes["dependencies_json"] = len(client.get("/_dash-dependencies").get_data())
    sizes["total"] = sum(sizes.values())
    return sizes


def _rss_mb() -> dict[str, float]:
    """Resident memory now (from /proc, Linux) and the process's peak so far, in MB."""
    import os
    import resource

    now = None
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        now = round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {"rss_mb": now, "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 5,000 points")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = (2_000, 5_000) if args.quick else (10_000, 50_000)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        memory = {"before": _rss_mb()}
        results = []
        for n in sizes:
            results.append(bench(n, args.repeats, base))
            memory[str(n)] = _rss_mb()
        payload = page_payload(base / f"run{sizes[0]}")
    print(json.dumps({
        "benchmark": "explore",
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "params": {"lens": "l2norm", "intervals": "30..", "overlap": 0.3, "eps": "auto (knee)",
                   "min_samples": 5, "repeats": args.repeats},
        "results": results,
        "page_payload_bytes": payload,
        "memory": memory,
    }, indent=2))


if __name__ == "__main__":
    main()
