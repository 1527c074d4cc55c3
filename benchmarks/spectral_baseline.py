"""Alpha-hat of untrained and trained models next to their random-init baselines.

For each architecture, an untrained instance (``build_model`` after ``torch.manual_seed``)
is analysed with its baseline (a fresh instance from the architecture's own constructor,
seed 0), and with the generic baseline the analysis used before (every module's
``reset_parameters()``). Several untrained seeds show how much alpha-hat varies between
independent inits of one architecture. With ``--checkpoint`` a trained model is added.

Prints one JSON object. Run:
``python benchmarks/spectral_baseline.py [--arch small_resnet resnet18] [--checkpoint PT]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from deepprofile.models import build_model, load_model
from deepprofile.spectral.baseline import reset_parameters_copy
from deepprofile.spectral.rmt import WeightSpectrumAnalyzer


def _alpha_hat(model: torch.nn.Module) -> float | None:
    return WeightSpectrumAnalyzer(compare_random_init=False).fit(model).result_.alpha_hat


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def untrained(arch: str, seeds: list[int], num_classes: int) -> dict:
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=num_classes)
        ana = WeightSpectrumAnalyzer(seed=0).fit(model)
        rows.append({"seed": seed, "alpha_hat": _round(ana.result_.alpha_hat),
                     "baseline_alpha_hat": _round(ana.random_init_.alpha_hat),
                     "baseline": ana.baseline_.method,
                     "generic_reset_alpha_hat": _round(_alpha_hat(reset_parameters_copy(model,
                                                                                        0)))})
    values = [r["alpha_hat"] for r in rows]
    return {"arch": arch, "untrained": rows, "alpha_hat_over_seeds": {
        "min": min(values), "max": max(values), "mean": _round(np.mean(values))}}


def trained(checkpoint: str) -> dict:
    model, info = load_model(checkpoint)
    ana = WeightSpectrumAnalyzer(seed=0).fit(model)
    return {"checkpoint": checkpoint, "arch": info.arch, "metrics": info.extra.get("metrics"),
            "alpha_hat": _round(ana.result_.alpha_hat),
            "baseline_alpha_hat": _round(ana.random_init_.alpha_hat),
            "baseline": ana.baseline_.method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["small_resnet", "resnet18"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 11])
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    out = {"untrained": [untrained(a, args.seeds, args.num_classes) for a in args.arch]}
    if args.checkpoint:
        out["trained"] = trained(args.checkpoint)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
