"""LDS of TRAK on the digits MLP of ``benchmarks/data_attribution.py`` for a range of ridges
(relative to the mean eigenvalue of ``X^T X``), on the benchmark's split (masks 0-31, its
50 test images) and on a held-out one (masks 32-63, 50 other test images).

    OMP_NUM_THREADS=1 python benchmarks/lds_mlp_ridge.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from deepprofile.data import DigitsDataset
from deepprofile.data_attribution.evaluation import lds, margins, random_subsets, subset_outputs
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos

sys.path.insert(0, str(Path(__file__).parent))
from data_attribution import DigitsMLP, train_mlp  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    train, test = DigitsDataset("train", size=8), DigitsDataset("test", size=8)
    n = len(train)
    rows = np.unique(np.linspace(0, len(test) - 1, 50).round().astype(int))
    held = np.setdiff1d(np.arange(len(test)), rows)[::9][:50]
    tmp = Path(tempfile.mkdtemp())
    ckpts: list[Path] = []
    for seed in range(3):
        train_mlp(train, np.arange(n), seed, tmp / f"seed{seed}")
        ckpts += sorted((tmp / f"seed{seed}").glob("epoch_*.pt"))
    infos = checkpoint_infos(ckpts)
    targets = Subset(test, np.concatenate([rows, held]).tolist())
    masks = random_subsets(n, 64, 0.5, seed=1)
    outputs = subset_outputs(lambda idx, s: train_mlp(train, idx, s), masks,
                             lambda m: margins(m, targets), seed=100)
    for ridge in (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0):
        for name, sub in (("6 checkpoints", infos), ("1 checkpoint", infos[-1:])):
            ens = TrakEnsemble(DigitsMLP(), sub, train, FeatureStore(tmp / "f.zarr"),
                               proj_dim=512, batch_size=64, quiet=True, ridge=ridge)
            s = ens.scores(MarginOutput(), targets)
            bench = lds(s[:, :50], masks[:32], outputs[:32, :50]).lds
            held_out = lds(s[:, 50:], masks[32:], outputs[32:, 50:]).lds
            print(f"ridge {ridge:g}, {name}: bench {bench:+.3f} held {held_out:+.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
