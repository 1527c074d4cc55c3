"""Run `run_attribution` on a run folder in a fresh process (for the kill tests).

Usage: python kill_worker.py RUN_DIR; the settings are ``test_shards.TINY``. Prints the
number of shards this process computed.
"""

from __future__ import annotations

import sys

import torch

TINY = {"n_images": 5, "sigmas": (0.0, 0.3), "n_draws": 2, "n_steps": 4, "robustness": False,
        "alignment": False, "accuracy_images": 8, "n_examples": 2, "shard_size": 2,
        "quiet": True}


def run(run_dir: str) -> int:
    from deepprofile.attribution.pipeline import load_run_inputs, run_attribution

    torch.set_num_threads(1)
    model, info, dataset, _ = load_run_inputs(run_dir, device="cpu")
    result = run_attribution(model, run_dir, dataset, model_info=info, **TINY)
    return int(result.timings["shards_computed"])


if __name__ == "__main__":
    print(run(sys.argv[1]))
