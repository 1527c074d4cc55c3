"""Cache what the LDS of TRAK on the demo CNN depends on, once, so TRAK's settings can be
swept cheaply (``benchmarks/lds_cnn_sweep.py``).

Stages (each skipped when its files exist in ``--out``):

- ``models``: the demo CNN (SmallResNet, digits 32x32, the demo's recipe:
  ``deepprofile.demo.demo_config``) for ``--seeds`` seeds, a checkpoint after every epoch
  (training does not depend on which checkpoints are kept, so epochs 2, 4, 6, 8 are the
  demo's own checkpoints).
- ``retrains``: ``--m`` random half-size training subsets (``random_subsets(n, m, 0.5,
  seed=1)``, the masks of ``benchmarks/data_attribution.py``), each retrained with the
  same recipe and seed ``100 + i`` (as there); the margins of all 540 test images.
  ``--replicates`` of them are retrained a second time with seed ``5000 + i``: the
  agreement between the two runs bounds the LDS any scores can reach.
- ``features``: per checkpoint, the engine's own per-sample margin gradients
  (``ScopedGradientComputer``, eval mode) of all training and test images, from which
  the exact gradient Gram matrices per parameter group (conv weights, BatchNorm affine,
  fc) and the engine's projected features (``make_projector``, ``--proj-dim`` columns,
  divided by sqrt(#params)) are kept, with ``Q = 1 - p`` of every image.

    python benchmarks/lds_cnn_cache.py --out /tmp/lds_cache --seeds 4 --m 64 --replicates 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from trak.utils import vectorize

from deepprofile.data import load_dataset
from deepprofile.data_attribution.evaluation import margins, random_subsets
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.trak import (
    ScopedGradientComputer,
    load_state,
    make_projector,
)
from deepprofile.demo import demo_config
from deepprofile.models import build_model, load_model
from deepprofile.models.train import train


def _config(seed: int, every_epoch: bool = False):
    cfg = demo_config(seed, fast=False)
    return replace(cfg, n_checkpoints=cfg.epochs) if every_epoch else cfg


def stage_models(out: Path, seeds: int, train_set, test) -> None:
    for seed in range(seeds):
        d = out / "models" / f"seed{seed}"
        if (d / "final.pt").exists():
            continue
        res = train(_config(seed, every_epoch=True), d, train_set=train_set, test_set=test,
                    quiet=True)
        print(f"seed {seed}: test acc {res.test_accuracy:.4f}", flush=True)


def stage_retrains(out: Path, m: int, replicates: int, train_set, test) -> None:
    n = len(train_set)
    masks = random_subsets(n, m, 0.5, seed=1)
    np.save(out / "masks.npy", masks)
    small_test = Subset(test, range(10))
    for tag, seed0, count in (("outputs", 100, m), ("replicates", 5000, replicates)):
        path = out / f"{tag}.npy"
        done = np.load(path) if path.exists() else np.zeros((0, len(test)))
        rows = list(done)
        for i in range(len(rows), count):
            with tempfile.TemporaryDirectory() as tmp:
                res = train(_config(seed0 + i), tmp, train_set=Subset(train_set,
                            np.flatnonzero(masks[i]).tolist()), test_set=small_test, quiet=True)
                model = load_model(res.final_checkpoint)[0]
            rows.append(margins(model, test))
            np.save(path, np.stack(rows))
            print(f"{tag} {i + 1}/{count}", flush=True)


def _groups(names_shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """Column indices of the flat gradient per parameter group."""
    cols: dict[str, list[np.ndarray]] = {"conv": [], "bn": [], "fc": []}
    start = 0
    for name, shape in names_shapes:
        size = int(np.prod(shape))
        group = "fc" if name.startswith("fc.") else ("conv" if len(shape) == 4 else "bn")
        cols[group].append(np.arange(start, start + size))
        start += size
    return {k: np.concatenate(v) for k, v in cols.items()}


def stage_features(out: Path, seeds: int, proj_dim: int, train_set, test,
                   epochs: set[int] | None = None) -> None:
    both = torch.utils.data.ConcatDataset([train_set, test])
    xs = torch.stack([both[i][0] for i in range(len(both))])
    ys = torch.tensor([int(both[i][1]) for i in range(len(both))])
    model = build_model("small_resnet", num_classes=10, in_channels=1).eval()
    groups = _groups([(n, tuple(p.shape)) for n, p in model.named_parameters()])
    d = sum(p.numel() for p in model.parameters())
    for seed in range(seeds):
        for ckpt in sorted((out / "models" / f"seed{seed}" / "checkpoints").glob("epoch_*.pt")):
            dest = out / "features" / f"seed{seed}_{ckpt.stem}.npz"
            if dest.exists() or (epochs and int(ckpt.stem.split("_")[1]) not in epochs):
                continue
            t = time.perf_counter()
            model.load_state_dict(load_state(ckpt))
            model.eval()
            gc = ScopedGradientComputer(model, MarginOutput(), None, torch.device("cpu"))
            grads = np.empty((len(both), d), dtype=np.float32)
            qs = np.empty(len(both), dtype=np.float64)
            for s in range(0, len(both), 64):
                batch = (xs[s:s + 64], ys[s:s + 64])
                grads[s:s + 64] = vectorize(gc.compute_per_sample_grad(batch=batch),
                                           device="cpu").detach().numpy()
                qs[s:s + 64] = gc.compute_loss_grad(batch).reshape(-1).detach().numpy()
            g = torch.from_numpy(grads)
            grams = {f"gram_{k}": (g[:, c] @ g[:, c].T).numpy() for k, c in groups.items()}
            mid = seed * 100 + int(ckpt.stem.split("_")[1])
            proj = make_projector(d, proj_dim, 0, mid, torch.device("cpu"))
            feats = (proj.project(g, model_id=mid) / np.sqrt(d)).numpy()
            np.savez(dest, q=qs, proj=feats, **grams)
            print(f"features {dest.name} {time.perf_counter() - t:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--replicates", type=int, default=32)
    p.add_argument("--proj-dim", type=int, default=2048)
    p.add_argument("--stages", default="models,retrains,features")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", default="", help="featurise only these epochs (comma list)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features").mkdir(exist_ok=True)
    train_set, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    (args.out / "setting.json").write_text(json.dumps(vars(args), default=str))
    stages = args.stages.split(",")
    if "models" in stages:
        stage_models(args.out, args.seeds, train_set, test)
    if "retrains" in stages:
        stage_retrains(args.out, args.m, args.replicates, train_set, test)
    if "features" in stages:
        epochs = {int(e) for e in args.epochs.split(",") if e}
        stage_features(args.out, args.seeds, args.proj_dim, train_set, test, epochs)


if __name__ == "__main__":
    main()
