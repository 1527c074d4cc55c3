"""Capture throughput: deepprofile's store-writing capture vs a plain forward pass and
torchvision's ``create_feature_extractor``, on resnet18 (random init), 64x64 inputs.

Prints one JSON object: images/s of each path and the overhead ratios. Every path
runs on the same in-memory images, in the same process, interleaved over repeats
(best of ``--repeats``), so the ratios compare like with like.

    python benchmarks/capture.py [--images 512] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from deepprofile.capture import capture_to_store
from deepprofile.models import build_model

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10).eval()
    images = torch.randn(args.images, 3, 64, 64)
    labels = torch.zeros(args.images, dtype=torch.long)
    dataset = TensorDataset(images, labels)
    extractor = create_feature_extractor(model, {name: name for name in LAYERS} | {"fc": "fc"})
    tmp = Path(tempfile.mkdtemp())

    @torch.no_grad()
    def plain() -> None:
        for start in range(0, args.images, args.batch_size):
            model(images[start : start + args.batch_size])

    @torch.no_grad()
    def fx() -> None:
        for start in range(0, args.images, args.batch_size):
            feats = extractor(images[start : start + args.batch_size])
            for name in LAYERS:
                feats[name].mean(dim=(2, 3)).cpu()

    def deepprofile_capture() -> None:
        path = tmp / "store.zarr"
        capture_to_store(model, dataset, LAYERS, path, reductions="mean",
                         batch_size=args.batch_size, chunk_size=256, overwrite=True, quiet=True)
        shutil.rmtree(path)

    paths = {"plain_forward": plain, "feature_extractor": fx,
             "deepprofile_capture": deepprofile_capture}
    best = {name: float("inf") for name in paths}
    plain()  # warm-up
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    shutil.rmtree(tmp, ignore_errors=True)
    ips = {name: args.images / seconds for name, seconds in best.items()}
    print(json.dumps({
        "benchmark": "capture", "model": "resnet18", "layers": LAYERS, "input": [3, 64, 64],
        "images": args.images, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in ips.items()},
        "capture_over_plain": round(best["deepprofile_capture"] / best["plain_forward"], 3),
        "capture_over_feature_extractor": round(
            best["deepprofile_capture"] / best["feature_extractor"], 3),
        "target_capture_over_plain": 1.10,
    }, indent=1))


if __name__ == "__main__":
    main()
