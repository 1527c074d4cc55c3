"""A tiny capture run as its own process, for the kill tests (test_kill.py).

Usage: python kill_worker.py RUN_DIR WEIGHTS_SEED [--overwrite]
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn


def build(weights_seed: int) -> tuple[nn.Module, object]:
    """A two-conv model (weights from ``weights_seed``) and 24 fixed 8x8 images."""
    from deepprofile.data import ArrayDataset

    torch.manual_seed(weights_seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    rng = np.random.default_rng(7)
    images = rng.normal(size=(24, 1, 8, 8)).astype(np.float32)
    return net, ArrayDataset(images, rng.integers(0, 4, size=24), name="kill")


def run(run_dir: str, weights_seed: int, overwrite: bool) -> None:
    """Capture layers 0, 2 and 5 in chunks of 8 (three chunks) into ``run_dir``."""
    from deepprofile.workflow import capture_run

    torch.set_num_threads(1)
    net, dataset = build(weights_seed)
    capture_run(net, dataset, run_dir, ["0", "2", "5"],
                reductions={"0": "positions:2", "2": "mean", "5": "mean"},
                batch_size=4, chunk_size=8, seed=3, overwrite=overwrite, quiet=True)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), "--overwrite" in sys.argv[3:])
