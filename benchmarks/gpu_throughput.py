"""GPU throughput: capture and SDE-IG on torchvision's resnet50 (random init) at 224 px.

Run by ``benchmarks/gpu.sh``. Measures, on one device, in one run:

* ``plain_forward``: images/s of ``model(x)`` under ``no_grad`` (the reference);
* ``capture``: images/s of ``capture_to_store`` (layer1..layer4, mean) into a fresh
  store on local disk, from a TensorDataset of the same images (pinned host memory,
  non-blocking copies, the background chunk writer), and its ratio to the plain forward;
* ``sde_ig``: images/s of ``sde_attribute`` (IG, ``--steps`` steps, ``--draws`` draws)
  under the default memory budget, with the internal batch it chose;
* the peak device memory of each (``torch.cuda.max_memory_allocated``).

Times are wall-clock with ``torch.cuda.synchronize()`` around them, best of ``--repeats``.

    python benchmarks/gpu_throughput.py --device cuda [--images 512] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sde-images", type=int, default=8)
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*did not already require gradients")

    import torchvision
    from torch.utils.data import TensorDataset

    from deepprofile.attribution.sde import sde_attribute
    from deepprofile.capture import capture_to_store

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    images = torch.randn(args.images, 3, args.size, args.size)
    labels = torch.zeros(args.images, dtype=torch.long)
    dataset = TensorDataset(images, labels)
    tmp = Path(tempfile.mkdtemp())

    @torch.no_grad()
    def plain() -> None:
        for start in range(0, args.images, args.batch_size):
            model(images[start : start + args.batch_size].to(device, non_blocking=True))

    def capture() -> None:
        path = tmp / "store.zarr"
        capture_to_store(model, dataset, ["layer1", "layer2", "layer3", "layer4"], path,
                         reductions="mean", batch_size=args.batch_size,
                         chunk_size=4 * args.batch_size, device=device, overwrite=True,
                         quiet=True)
        shutil.rmtree(path)

    x_sde = images[: args.sde_images].to(device)
    plan: dict = {}

    def sde() -> None:
        res = sde_attribute(model, x_sde, sigma=0.1, n_draws=args.draws, n_steps=args.steps,
                            target=torch.zeros(len(x_sde), dtype=torch.long))
        plan.update(res.params.get("memory") or {})

    results = {}
    for name, fn, n in (("plain_forward", plain, args.images), ("capture", capture, args.images),
                        ("sde_ig", sde, args.sde_images)):
        fn()  # warm-up (cuDNN autotuning, allocator)
        best = float("inf")
        _reset_peak(device)
        for _ in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        results[name] = {"seconds_best": round(best, 3), "images_per_s": round(n / best, 2),
                         "peak_device_mb": _peak_mb(device)}
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "benchmark": "gpu_throughput", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": f"{args.model} (random init)", "size": args.size, "images": args.images,
        "batch_size": args.batch_size, "sde": {"images": args.sde_images, "draws": args.draws,
                                               "steps": args.steps, "memory_plan": plan},
        "results": results,
        "capture_over_plain": round(results["capture"]["seconds_best"]
                                    / results["plain_forward"]["seconds_best"], 3),
        "target_capture_over_plain": 1.10,
    }, indent=1))


if __name__ == "__main__":
    main()
