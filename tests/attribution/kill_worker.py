"""Run `run_attribution` on a run folder in a fresh process (for the kill tests).

Usage: ``python kill_worker.py RUN_DIR [sets]``; the settings are ``test_shards.TINY``.
Prints the number of shards this process computed. With ``sets`` the run also fine-tunes
a noisy copy and explains mapper-node rows (``SETS``), and the process prints its
timings as one JSON line instead (shards computed, whether it fine-tuned).
"""

from __future__ import annotations

import json
import sys

import torch
from threadpoolctl import threadpool_limits

TINY = {"n_images": 5, "sigmas": (0.0, 0.3), "n_draws": 2, "n_steps": 4, "robustness": False,
        "alignment": False, "accuracy_images": 8, "n_examples": 2, "shard_size": 2,
        "quiet": True}
#: Fine-tuning and node maps on top of TINY (the train split is the run's own).
NODE_MEMBERS = {"n0": [0, 1, 2, 7], "n1": [3, 4, 15, 19], "n2": [],
                "n3": [5, 6, 7, 8, 9, 10]}
SETS = {"finetune_steps": 3, "node_members": NODE_MEMBERS, "node_layer": "layer2",
        "max_per_node": 3}


def run(run_dir: str, sets: bool = False) -> int | dict[str, float]:
    from deepprofile.attribution.pipeline import load_run_inputs, run_attribution

    torch.set_num_threads(1)
    model, info, dataset, train = load_run_inputs(run_dir, device="cpu", need_train=sets)
    extra = {**SETS, "train_dataset": train} if sets else {}
    with threadpool_limits(limits=1, user_api="blas"):  # as the CLI: the node alignments'
        # last bits depend on BLAS's thread count
        result = run_attribution(model, run_dir, dataset, model_info=info, **TINY, **extra)
    if sets:
        return result.timings
    return int(result.timings["shards_computed"])


if __name__ == "__main__":
    got = run(sys.argv[1], sets=len(sys.argv) > 2 and sys.argv[2] == "sets")
    print(json.dumps(got) if isinstance(got, dict) else got)
