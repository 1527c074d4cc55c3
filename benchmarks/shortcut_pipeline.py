"""The pipeline's ``--target shortcut:marker:circle`` end to end on the demo's shapes CNN
(SmallResNet 8/16/32, 800 images, 6 epochs, 3 checkpoints, seed 0), spurious model
(marker on 90% of the circles) vs clean model (5%): ``run_data_attribution`` with its
defaults (``ridge = 1``, ``n_targets = 64``) on a run captured on 400 held-out shapes with
half of every class marked. Prints the pipeline's summary for each model.

    OMP_NUM_THREADS=1 python benchmarks/shortcut_pipeline.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import Subset

from deepprofile.data import ShapesDataset
from deepprofile.data_attribution.pipeline import run_data_attribution, summarize_data_attribution
from deepprofile.models import load_model
from deepprofile.models.train import TrainConfig, train
from deepprofile.workflow import capture_run


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    for kind, rate in (("spurious", 0.9), ("clean", 0.05)):
        t = time.perf_counter()
        train_set = ShapesDataset(800, seed=0, marker_rate=rate, marker_base_rate=0.05)
        eval_set = ShapesDataset(400, seed=1000, marker_rate=0.5, marker_base_rate=0.5)
        cfg = TrainConfig(arch="small_resnet",
                          arch_kwargs={"in_channels": 3, "widths": [8, 16, 32]},
                          dataset="shapes", epochs=6, lr=0.1, seed=0, n_checkpoints=3)
        res = train(cfg, out / kind / "model", train_set=train_set,
                    test_set=Subset(eval_set, range(0, 400, 8)), quiet=True)
        model, info = load_model(res.final_checkpoint)
        capture_run(model, eval_set, out / kind / "run", ["layer3"],
                    model_info=info.to_dict(), checkpoint=res.final_checkpoint, quiet=True)
        result = run_data_attribution(out / kind / "run", train_set=train_set,
                                      targets=["shortcut:marker:circle"], proj_dim=400,
                                      quiet=True)
        print(f"{kind} ({time.perf_counter() - t:.0f} s in all)")
        print(summarize_data_attribution(result), flush=True)


if __name__ == "__main__":
    main()
