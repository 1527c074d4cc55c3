"""Benchmark: deepprofile's MapperGraph against kmapper used directly, same parameters.

Clouds of 10,000 and 50,000 points in 64-D (a seeded mixture of 10 Gaussian
clusters with different spreads, like class clusters of a late layer). Both sides
use the L2-norm lens, ``Cover(40, 0.3)`` and ``DBSCAN(eps, min_samples=5)``; the
reference gets the ``eps`` that deepprofile chose automatically, so both build
the same graph (checked: ``same_graph``). deepprofile's time includes everything
``fit`` does on top of kmapper: the lens, the automatic eps (k-NN knee on 300 seeded
query points against the whole cloud), the statistics and per-node representatives.
deepprofile passes kmapper a sparse-product nerve (same links as kmapper's
``GraphNerve``, whose pairwise set intersections are the slow part of ``map``), so its
``kmapper.map`` call is faster than the reference's; ``nerve_s`` times both nerves on
the same nodes and ``added_work_pct`` says what the lens, eps and statistics cost as a
share of the reference's time, i.e. the overhead without the faster nerve.

The two sides run back to back in alternating order (ours, ref, ref, ours, ...) after
a warm-up. Reported: the minimum and median time of each side, ``ratio_min``
(min/min), ``ratio_median`` (median/median) and ``ratio_paired_median`` (median over
repeats of the ratio of the two back-to-back runs, robust to slow drifts of the
machine's speed). Prints one JSON object.

    python benchmarks/mapper.py            # about 30 s on 2 cores
    python benchmarks/mapper.py --quick    # 2,000 and 5,000 points
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def make_cloud(n: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim)) * 4.0
    spread = rng.uniform(0.5, 1.5, size=10)
    labels = rng.integers(0, 10, size=n)
    X = centres[labels] + rng.normal(size=(n, dim)) * spread[labels, None]
    return X.astype(np.float32), labels


def run_reference(X: np.ndarray, eps: float, intervals: int, overlap: float) -> dict:
    import kmapper
    from sklearn.cluster import DBSCAN

    lens = np.linalg.norm(X.astype(np.float64), axis=1)[:, None]
    return kmapper.KeplerMapper(verbose=0).map(
        lens, X, clusterer=DBSCAN(eps=eps, min_samples=5),
        cover=kmapper.Cover(n_cubes=intervals, perc_overlap=overlap),
    )


def bench(n: int, repeats: int, intervals: int = 40, overlap: float = 0.3) -> dict:
    import kmapper

    from deepprofile.mapper.graph import MapperGraph, _sparse_nerve_class
    from deepprofile.mapper.knee import knn_knee_eps

    X, y = make_cloud(n, seed=n)
    ours_t: list[float] = []
    ref_t: list[float] = []
    breakdowns: list[dict[str, float]] = []
    eps = MapperGraph(seed=0).fit(X[:1000]).eps_  # warm-up: imports, thread pools
    run_reference(X[:1000], eps, intervals, overlap)

    def ours_once() -> MapperGraph:
        t = time.perf_counter()
        b = MapperGraph(lens="l2norm", intervals=intervals, overlap=overlap, seed=0).fit(
            X, labels=y
        )
        ours_t.append(time.perf_counter() - t)
        breakdowns.append(b.timings_)
        return b

    def ref_once(eps: float) -> dict:
        t = time.perf_counter()
        g = run_reference(X, eps, intervals, overlap)
        ref_t.append(time.perf_counter() - t)
        return g

    builder = ours_once()  # warm-up at full size (not timed below)
    graph = ref_once(builder.eps_)
    ours_t.clear(), ref_t.clear(), breakdowns.clear()
    for r in range(repeats):  # back to back, alternating which side goes first
        if r % 2 == 0:
            builder = ours_once()
            graph = ref_once(builder.eps_)
        else:
            graph = ref_once(builder.eps_)
            builder = ours_once()
    result = builder.result_
    same = {k: sorted(v) for k, v in graph["nodes"].items()} == {
        node.id: list(node.members) for node in result.nodes
    } and {k: list(v) for k, v in graph["links"].items()} == {
        k: list(v) for k, v in builder.graph_["links"].items()
    }
    nerves = {}
    for name, nerve in (("kmapper_GraphNerve", kmapper.GraphNerve()),
                        ("deepprofile_sparse", _sparse_nerve_class()())):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            nerve.compute(builder.graph_["nodes"])
            times.append(time.perf_counter() - t)
        nerves[name] = round(min(times), 4)
    ours_min, ref_min = min(ours_t), min(ref_t)
    ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
    added = [b["lens_s"] + b["eps_s"] + b["statistics_s"] for b in breakdowns]
    out = {
        "n_points": n,
        "dims": X.shape[1],
        "repeats": repeats,
        "deepprofile_s_min": round(ours_min, 4),
        "kmapper_s_min": round(ref_min, 4),
        "deepprofile_s_median": round(ours_med, 4),
        "kmapper_s_median": round(ref_med, 4),
        "ratio_min": round(ours_min / ref_min, 3),
        "ratio_median": round(ours_med / ref_med, 3),
        "ratio_paired_median": round(statistics.median(
            o / r for o, r in zip(ours_t, ref_t, strict=True)), 3),
        "same_graph": bool(same),
        "eps": round(builder.eps_, 4),
        "knee_queries": builder.knee_.n_queries,
        "added_work_pct": round(100 * statistics.median(added) / ref_med, 1),
        "breakdown_s_min": {k: round(min(b[k] for b in breakdowns), 4) for k in breakdowns[0]},
        "breakdown_s_median": {
            k: round(statistics.median(b[k] for b in breakdowns), 4) for k in breakdowns[0]
        },
        "nerve_s": nerves,
        "n_nodes": result.stats.n_nodes,
        "n_edges": result.stats.n_edges,
        "node_purity": round(result.stats.node_purity, 3),
        "uncovered_fraction": round(result.stats.uncovered_fraction, 3),
        "all_runs_s": {"deepprofile": [round(t, 3) for t in ours_t],
                       "kmapper": [round(t, 3) for t in ref_t]},
    }
    if n <= 10_000:  # how close is the subsampled knee to the knee on every point?
        t = time.perf_counter()
        full = knn_knee_eps(X, 5, sample=None)
        out["eps_all_points"] = round(full.eps, 4)
        out["eps_all_points_s"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small clouds (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = (2_000, 5_000) if args.quick else (10_000, 50_000)
    repeats = {sizes[0]: args.repeats or 15, sizes[1]: args.repeats or 5}
    start = time.perf_counter()
    cases = [bench(n, repeats[n]) for n in sizes]
    print(json.dumps({
        "benchmark": "mapper graph construction, deepprofile vs kmapper (same parameters)",
        "params": {"lens": "l2norm", "intervals": 40, "overlap": 0.3, "min_samples": 5},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "target_ratio_max": 1.10,
        "cases": cases,
        "max_ratio_min": max(c["ratio_min"] for c in cases),
        "max_ratio_paired_median": max(c["ratio_paired_median"] for c in cases),
        "total_s": round(time.perf_counter() - start, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
