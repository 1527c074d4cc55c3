"""Sweep TRAK's settings against cached LDS retrains of the demo CNN
(``benchmarks/lds_cnn_cache.py`` writes the cache).

Scores are rebuilt from the cached per-checkpoint features in float64:

- ``trak``: TRAK as the engine computes it (``TRAKer.finalize_scores``): per checkpoint
  ``X (X^T X + lambda I)^-1 T^T`` on the first ``k`` projected columns, traker's
  rescaling of the inverse by its mean absolute entry, mean over checkpoints, times
  the mean ``Q``. ``lambda = rel * trace(X^T X) / k``.
- ``kernel``: the same without projection, from the exact gradient Gram matrices:
  ``(K + lambda I)^-1 K_target`` (the identity ``X (X^T X + l)^-1 = (X X^T + l)^-1 X``),
  optionally over a subset of parameter groups.
- ``tracin``: TracInCP from the same Grams: ``sum_c Q_i Q_t <g_i, g_t>`` (the
  cross-entropy gradient is ``-(1 - p)`` times the margin gradient).

LDS is reported on the benchmark's split (masks ``0..m-1``, the 50 test images of
``benchmarks/data_attribution.py``) and on a held-out split used for choosing settings
(masks ``m..``, 50 other test images).

    python benchmarks/lds_cnn_sweep.py --cache /tmp/lds_cache
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

N_TRAIN = 1257
BENCH_TARGETS = np.unique(np.linspace(0, 539, 50).round().astype(int))
HELD_TARGETS = np.setdiff1d(np.arange(540), BENCH_TARGETS)[::9][:50]


def spearman_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of matching columns of ``a`` and ``b`` ``(m, t)``."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    den = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    return np.where(den > 0, (ra * rb).sum(0) / np.where(den > 0, den, 1), 0.0)


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.masks = np.load(root / "masks.npy")
        self.outputs = np.load(root / "outputs.npy")
        rep = root / "replicates.npy"
        self.replicates = np.load(rep) if rep.exists() else None

    @lru_cache(maxsize=64)  # noqa: B019
    def ckpt(self, seed: int, epoch: int) -> dict[str, np.ndarray]:
        z = np.load(self.root / "features" / f"seed{seed}_epoch_{epoch:03d}.npz")
        return {k: z[k].astype(np.float64) for k in z.files}

    def lds(self, scores: np.ndarray, split: str, m: int) -> float:
        """LDS of ``scores`` (n_train, 540 test images) on a split."""
        if split == "bench":
            rows, cols = np.arange(m), BENCH_TARGETS
        else:
            rows, cols = np.arange(m, len(self.outputs)), HELD_TARGETS
        pred = self.masks[rows].astype(np.float64) @ scores[:, cols]
        return float(spearman_cols(pred, self.outputs[np.ix_(rows, cols)]).mean())


def _norm_inv(a: np.ndarray, lam: float) -> np.ndarray:
    inv = np.linalg.inv(a + lam * np.eye(len(a)))
    return inv / np.abs(inv).mean()


def trak_scores(cache: Cache, ckpts: list[tuple[int, int]], k: int = 512, rel: float = 0.0,
                q: str = "mean", weighting: str = "traker") -> np.ndarray:
    acc, qsum = 0.0, 0.0
    for c in ckpts:
        f = cache.ckpt(*c)
        x, t = f["proj"][:N_TRAIN, :k], f["proj"][N_TRAIN:, :k]
        xtx = x.T @ x
        lam = rel * np.trace(xtx) / k
        if weighting == "traker":
            part = x @ _norm_inv(xtx, lam) @ t.T
        else:
            part = x @ np.linalg.inv(xtx + lam * np.eye(k)) @ t.T
            if weighting == "unit":
                part /= part.std(0, keepdims=True)
        qc = f["q"][:N_TRAIN]
        acc = acc + (part * qc[:, None] if q == "per_ckpt" else part)
        qsum = qsum + qc
    n = len(ckpts)
    if q == "mean":
        return acc / n * (qsum / n)[:, None]
    return acc / n


def kernel_scores(cache: Cache, ckpts: list[tuple[int, int]], rel: float,
                  groups: tuple[str, ...] = ("conv", "bn", "fc"), q: str = "mean",
                  weighting: str = "unit") -> np.ndarray:
    acc, qsum = 0.0, 0.0
    for c in ckpts:
        f = cache.ckpt(*c)
        gram = sum(f[f"gram_{g}"] for g in groups)
        ktt, ktq = gram[:N_TRAIN, :N_TRAIN], gram[:N_TRAIN, N_TRAIN:]
        lam = rel * np.trace(ktt) / N_TRAIN
        part = np.linalg.solve(ktt + lam * np.eye(N_TRAIN), ktq)
        if weighting == "unit":
            part /= part.std(0, keepdims=True)
        qc = f["q"][:N_TRAIN]
        acc = acc + (part * qc[:, None] if q == "per_ckpt" else part)
        qsum = qsum + qc
    n = len(ckpts)
    if q == "mean":
        return acc / n * (qsum / n)[:, None]
    return acc / n


def tracin(cache: Cache, ckpts: list[tuple[int, int]],
           groups: tuple[str, ...] = ("conv", "bn", "fc")) -> np.ndarray:
    acc = 0.0
    for c in ckpts:
        f = cache.ckpt(*c)
        gram = sum(f[f"gram_{g}"] for g in groups)
        acc = acc + f["q"][:N_TRAIN, None] * gram[:N_TRAIN, N_TRAIN:] * f["q"][None, N_TRAIN:]
    return acc


def ceiling(cache: Cache) -> dict[str, float]:
    """Agreement of two retrains (different seeds) of the same subsets."""
    if cache.replicates is None:
        return {}
    r = len(cache.replicates)
    out = {}
    for name, cols in (("bench", BENCH_TARGETS), ("held", HELD_TARGETS)):
        rho = spearman_cols(cache.outputs[:r, cols], cache.replicates[:, cols])
        out[name] = {"replicate_spearman": float(rho.mean()),
                     "sqrt_ceiling": float(np.sqrt(np.clip(rho, 0, None)).mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--m", type=int, default=24, help="masks of the benchmark split")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", default="2,4,6,8")
    args = p.parse_args()
    cache = Cache(args.cache)
    epochs = [int(e) for e in args.epochs.split(",")]
    ckpts = [(s, e) for s in range(args.seeds) for e in epochs]
    res = {"ceiling": ceiling(cache), "rows": []}

    def row(name: str, scores: np.ndarray) -> None:
        r = {"name": name, "bench": cache.lds(scores, "bench", args.m),
             "held": cache.lds(scores, "held", args.m)}
        res["rows"].append(r)
        print(f"{name:55s} bench {r['bench']:+.3f} held {r['held']:+.3f}", flush=True)

    grid = (0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
    row("tracin (same checkpoints)", tracin(cache, ckpts))
    for k in (256, 512, 1024, 2048):
        for rel in grid:
            if k >= N_TRAIN and rel == 0:
                continue
            row(f"trak k={k} ridge={rel:g}", trak_scores(cache, ckpts, k, rel))
    best = max((r for r in res["rows"] if r["name"].startswith("trak k=512")),
               key=lambda r: r["held"])
    print(f"best ridge at k=512 on the held-out split: {best['name']}", flush=True)
    for rel in (0.0, 1.0):
        row(f"trak k=512 ridge={rel:g} no Q", trak_scores(cache, ckpts, 512, rel, q="none"))
        row(f"trak k=512 ridge={rel:g} Q per checkpoint",
            trak_scores(cache, ckpts, 512, rel, q="per_ckpt"))
        row(f"trak k=512 ridge={rel:g} unit-weighted checkpoints",
            trak_scores(cache, ckpts, 512, rel, weighting="unit"))
        for groups in (("conv", "bn", "fc"), ("conv", "fc"), ("fc",)):
            row(f"exact kernel ridge={rel:g} params {'+'.join(groups)}",
                kernel_scores(cache, ckpts, max(rel, 1e-6), groups, weighting="unit"))
        if args.seeds == 1:
            for name, eps in (("final checkpoint", [8]), ("all 8 epochs", range(1, 9)),
                              ("epochs 1-4", range(1, 5))):
                row(f"trak k=512 ridge={rel:g} {name}",
                    trak_scores(cache, [(0, e) for e in eps], 512, rel))
    print(json.dumps(res["ceiling"]))


if __name__ == "__main__":
    main()
