"""Benchmark: deepprofile's attribution wrappers against calling captum directly.

Measures, on the CPU, in one run:

* IG (50 steps): ``deepprofile.attribution.attribute(method="ig")`` vs
  ``captum.attr.IntegratedGradients(model).attribute`` on the same batch;
* saliency: the wrapper vs ``captum.attr.Saliency`` (tiny work, so fixed costs show);
* SDE-IG (N = 16 draws, 10 steps each): ``sde_attribute`` vs a plain loop of 16 captum IG
  calls without noise (the floor for averaging 16 draws), so the ratio is the cost of the
  noise hooks, the seeding and the running mean.

Models: the demo SmallResNet (random init, 1x32x32, batch 8) and torchvision's resnet18
(random init, ``weights=None``, 3x64x64, batch 2). Repeats are interleaved and the minimum
is used for the ratios (robust to other processes on the machine); medians are printed too.

    python benchmarks/attribution.py [--repeats 5] [--threads N]

Prints one JSON object. Target: wrapper overhead at most 5% over captum.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch


def _timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _pair(ref, ours, repeats: int) -> dict:
    """Interleave the reference and ours ``repeats`` times after one warm-up each."""
    ref()
    ours()
    t_ref, t_ours = [], []
    for _ in range(repeats):
        t_ref += _timeit(ref, 1)
        t_ours += _timeit(ours, 1)
    return {
        "captum_s_min": min(t_ref), "ours_s_min": min(t_ours),
        "captum_s_median": statistics.median(t_ref), "ours_s_median": statistics.median(t_ours),
        "overhead_min": min(t_ours) / min(t_ref) - 1.0,
        "overhead_median": statistics.median(t_ours) / statistics.median(t_ref) - 1.0,
    }


def bench_model(name: str, model: torch.nn.Module, x: torch.Tensor, repeats: int,
                n_draws: int = 16, sde_steps: int = 10) -> dict:
    from captum.attr import IntegratedGradients, Saliency

    from deepprofile.attribution import attribute, sde_attribute

    model.eval()
    with torch.no_grad():
        t = model(x).argmax(1)
    n = len(x)
    ig = IntegratedGradients(model)
    sal = Saliency(model)

    def captum_ig(steps: int = 50):
        return ig.attribute(x, target=t, n_steps=steps)

    def ours_ig():
        return attribute(model, x, method="ig", target=t, n_steps=50, batch_size=n)

    def captum_sal():
        return sal.attribute(x, target=t, abs=False)

    def ours_sal():
        return attribute(model, x, method="saliency", target=t, batch_size=n)

    def captum_loop():
        acc = None
        for _ in range(n_draws):
            a = captum_ig(sde_steps)
            acc = a if acc is None else acc + a
        return acc / n_draws

    def ours_sde():
        return sde_attribute(model, x, sigma=0.1, n_draws=n_draws, method="ig", target=t,
                             n_steps=sde_steps, batch_size=n)

    res_ig = _pair(captum_ig, ours_ig, repeats)
    res_sal = _pair(captum_sal, ours_sal, repeats)
    res_sde = _pair(captum_loop, ours_sde, max(1, repeats - 1))
    return {
        "model": name,
        "input_shape": list(x.shape),
        "ig50": {**res_ig, "images_per_s_captum": n / res_ig["captum_s_min"],
                 "images_per_s_ours": n / res_ig["ours_s_min"]},
        "saliency": res_sal,
        "sde_ig": {**res_sde, "n_draws": n_draws, "n_steps": sde_steps,
                   "reference": f"{n_draws} captum IG calls without noise",
                   "images_per_s_ours": n / res_sde["ours_s_min"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*did not already require gradients")
    from torchvision.models import resnet18

    from deepprofile.models.small import SmallResNet

    torch.manual_seed(0)
    t0 = time.perf_counter()
    small = SmallResNet(num_classes=10, in_channels=1)
    x_small = torch.randn(8, 1, 32, 32)
    r18 = resnet18(weights=None, num_classes=10)
    x_r18 = torch.randn(2, 3, 64, 64)
    results = [
        bench_model("SmallResNet", small, x_small, args.repeats),
        bench_model("resnet18", r18, x_r18, args.repeats),
    ]
    worst = max(max(r["ig50"]["overhead_min"], r["sde_ig"]["overhead_min"]) for r in results)
    print(json.dumps({
        "benchmark": "attribution",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "results": results,
        "worst_overhead_ig_and_sde": worst,
        "target_overhead": 0.05,
        "meets_target": worst <= 0.05,
        "seconds_total": time.perf_counter() - t0,
    }, indent=1))


if __name__ == "__main__":
    main()
