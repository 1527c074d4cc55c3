"""Benchmark: deepprofile's persistence path against ripser.py, and a 10-layer distance matrix.

Prints one JSON object. For 500 / 1,000 / 2,000 points of 64-D (Gaussian clouds, and a
1,000-point activation cloud of an untrained SmallResNet's layer3), H0+H1 Vietoris-Rips
time of ``VietorisRips((0, 1), n_threads=2)`` (giotto-ph inside) against ``ripser.ripser(X,
maxdim=1)`` on the same arrays, best of ``--repeats`` interleaved runs, with the diagrams
checked to agree. Then the time of full 10 x 10 layer distance matrices (H0 and H1) for
each metric, against giotto-tda's ``PairwiseDistance`` (hera) where it has the metric.

    python benchmarks/topology.py [--repeats 2] [--quick] [--full]

Timings depend on the machine's load; ``loadavg`` is reported with them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _agree(ours, theirs) -> float:
    """Largest difference between sorted finite deaths of H0 and H1 (float32 rounding)."""
    worst = 0.0
    for dim in (0, 1):
        a = np.sort(ours.finite(dim), axis=0)
        b = theirs["dgms"][dim]
        b = np.sort(b[np.isfinite(b[:, 1])], axis=0)
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float(np.abs(a - b).max()) if len(a) else 0.0)
    return worst


def _activation_cloud(n: int) -> np.ndarray:
    import torch

    from deepprofile.capture import ActivationRecorder
    from deepprofile.data.digits import DigitsDataset
    from deepprofile.models.small import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet()
    images = DigitsDataset("all").images
    with ActivationRecorder(model, ["layer3"], "max_position") as rec:
        acts = rec(images).activations["layer3"].numpy().astype(np.float64)
    pick = np.random.default_rng(0).choice(len(acts), n, replace=False)
    return acts[pick]


def bench_persistence(repeats: int, sizes: tuple[int, ...]) -> dict:
    from ripser import ripser

    from deepprofile.topology.persistence import VietorisRips

    rips = VietorisRips((0, 1), n_threads=2)
    clouds = {f"gaussian_{n}x64": np.random.default_rng(n).normal(size=(n, 64)) for n in sizes}
    clouds["activations_1000x64"] = _activation_cloud(1000)
    out = {}
    for name, x in clouds.items():
        rows_ours, rows_ref = [], []
        ours = theirs = None
        for _ in range(repeats):  # interleave so load changes hit both alike
            t, ours = _best(lambda x=x: rips.compute(x), 1)
            rows_ours.append(t)
            t, theirs = _best(lambda x=x: ripser(x, maxdim=1), 1)
            rows_ref.append(t)
        ours_s, ref_s = min(rows_ours), min(rows_ref)
        out[name] = {
            "deepprofile_s": round(ours_s, 3), "ripser_py_s": round(ref_s, 3),
            "speedup": round(ref_s / ours_s, 2),
            "n_h1": int(len(ours[1])), "max_abs_diff": _agree(ours, theirs),
        }
    return out


def bench_matrix(n_layers: int = 10, n_points: int = 500, full: bool = False) -> dict:
    from gtda.diagrams import PairwiseDistance

    from deepprofile.topology.distances import METRICS, DiagramDistance
    from deepprofile.topology.persistence import VietorisRips

    rng = np.random.default_rng(0)
    clouds = []
    for i in range(n_layers):  # clouds of varying shape, as layers of a network
        x = rng.normal(size=(n_points, 64)) * np.linspace(1.0, 0.1 + 0.1 * i, 64)
        clouds.append(x / np.median(np.linalg.norm(x - x[::-1], axis=1)))
    start = time.perf_counter()
    dgs = [VietorisRips((0, 1), n_threads=2).compute(x) for x in clouds]
    out: dict = {"persistence_s": round(time.perf_counter() - start, 3)}
    # giotto-tda input: (n, k, 3) triples padded with diagonal points, infinite H0 dropped
    finite = [[dg.finite(d) for d in (0, 1)] for dg in dgs]
    width = max(len(f[0]) + len(f[1]) for f in finite)
    gt = np.zeros((n_layers, width, 3))
    for i, (h0, h1) in enumerate(finite):
        triples = np.vstack([np.column_stack([h0, np.zeros(len(h0))]),
                             np.column_stack([h1, np.ones(len(h1))])])
        gt[i, :len(triples)] = triples
        gt[i, len(triples):, 2] = 1  # padding: zero-length H1 points
    for metric in METRICS:
        start = time.perf_counter()
        mats = [DiagramDistance(metric).pairwise(dgs, d) for d in (0, 1)]
        ours = time.perf_counter() - start
        row = {"deepprofile_s": round(ours, 3), "exact": DiagramDistance(metric).params()[
            "exact"]}
        refs = {"bottleneck": ("bottleneck", {"delta": 0.0})}
        if full:  # hera's approximate Wasserstein: ~90 s more on this machine
            refs["wasserstein"] = ("wasserstein", {"p": 2, "delta": 0.01})
        ref = refs.get(metric)
        if ref is not None:
            start = time.perf_counter()
            pw = PairwiseDistance(metric=ref[0], metric_params=ref[1], order=None, n_jobs=2)
            theirs = pw.fit_transform(gt)
            ref_s = time.perf_counter() - start
            row.update(giotto_tda_s=round(ref_s, 3), speedup=round(ref_s / ours, 2),
                       giotto_tda_params=ref[1],
                       max_rel_diff=float(max(
                           np.abs(theirs[:, :, d] - mats[d]).max() / max(mats[d].max(), 1e-12)
                           for d in (0, 1))))
        out[metric] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="500 and 1,000 points only")
    parser.add_argument("--full", action="store_true",
                        help="also time giotto-tda's (approximate) Wasserstein matrix")
    args = parser.parse_args()
    sizes = (500, 1000) if args.quick else (500, 1000, 2000)
    start = time.perf_counter()
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "persistence_h0_h1": bench_persistence(args.repeats, sizes),
        "distance_matrix_10_layers_500_points": bench_matrix(full=args.full),
    }
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
