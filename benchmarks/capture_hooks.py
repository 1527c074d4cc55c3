"""What the capture's forward hooks cost: resnet18 (random init), 4 layers, mean reduction,
forward passes only (no store), against a plain forward pass on the same images.

Paths, each timed over all images, repeated and medians taken (the order is the same in
every repeat): plain forward; hooks that do nothing; hooks that average each layer; the
same plus a row-by-row finiteness check (the recorder's check before it was batched);
:class:`~deepprofile.capture.hooks.ActivationRecorder` with and without its check.

    python benchmarks/capture_hooks.py [--images 1024] [--size 32] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from deepprofile.capture.hooks import ActivationRecorder
from deepprofile.models import build_model

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
    modules = dict(model.named_modules())
    step = args.batch_size

    @torch.no_grad()
    def plain() -> None:
        for s in range(0, args.images, step):
            model(images[s : s + step])

    def hooked(fn):
        def run() -> None:
            handles = [modules[name].register_forward_hook(fn) for name in LAYERS]
            try:
                plain()
            finally:
                for handle in handles:
                    handle.remove()
        return run

    def mean_hook(module, args_, out) -> None:
        out.mean(dim=(2, 3))

    def mean_rowwise_check(module, args_, out) -> None:
        reduced = out.reshape(out.shape[0], out.shape[1], -1).mean(dim=2)
        bool(torch.isfinite(reduced).all(dim=1).all())

    def recorder(check: bool):
        def run() -> None:
            with ActivationRecorder(model, LAYERS, "mean", check_finite=check) as rec:
                for s in range(0, args.images, step):
                    rec(images[s : s + step], sample_indices=np.arange(s, s + step))
        return run

    paths = {"plain_forward": plain, "hooks_doing_nothing": hooked(lambda m, a, o: None),
             "hooks_mean": hooked(mean_hook), "hooks_mean_rowwise_check": hooked(
                 mean_rowwise_check),
             "recorder": recorder(True), "recorder_without_check": recorder(False)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(json.dumps({
        "benchmark": "capture_hooks", "model": "resnet18", "layers": LAYERS,
        "input": [3, args.size, args.size], "images": args.images, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "over_plain": {k: round(v / med["plain_forward"], 3) for k, v in med.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
