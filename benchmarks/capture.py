"""Capture throughput: deepprofile's store-writing capture vs a plain forward pass and
torchvision's ``create_feature_extractor``, on resnet18 (random init), 64x64 inputs.

Prints one JSON object: images/s of each path and the overhead ratios. Every path
runs on the same in-memory images, in the same process, interleaved over repeats
(best of ``--repeats``), so the ratios compare like with like.

Fixed and marginal costs: each path also runs on a quarter of the images; with the
times t(n) at n = N/4 and N, the per-image (marginal) time is
(t(N) - t(N/4)) / (N - N/4) and the fixed cost t(N) - N x marginal (for the capture:
store creation, the shape probe, hashing the weights, the final fingerprint).
``marginal_capture_over_plain`` is the capture's per-image cost against a plain
forward pass's, measured in the same run.

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
    def plain(n: int) -> None:
        for start in range(0, n, args.batch_size):
            model(images[start : min(start + args.batch_size, n)])

    @torch.no_grad()
    def fx(n: int) -> None:
        for start in range(0, n, args.batch_size):
            feats = extractor(images[start : min(start + args.batch_size, n)])
            for name in LAYERS:
                feats[name].mean(dim=(2, 3)).cpu()

    def deepprofile_capture(n: int) -> None:
        path = tmp / "store.zarr"
        capture_to_store(model, dataset, LAYERS, path, reductions="mean",
                         batch_size=args.batch_size, chunk_size=256, overwrite=True, quiet=True,
                         indices=range(n))
        shutil.rmtree(path)

    paths = {"plain_forward": plain, "feature_extractor": fx,
             "deepprofile_capture": deepprofile_capture}
    small = max(args.batch_size, args.images // 4)
    sizes = (small, args.images)
    best = {(name, n): float("inf") for name in paths for n in sizes}
    plain(args.images)  # warm-up
    for _ in range(args.repeats):
        for n in sizes:
            for name, fn in paths.items():
                t0 = time.perf_counter()
                fn(n)
                best[name, n] = min(best[name, n], time.perf_counter() - t0)
    shutil.rmtree(tmp, ignore_errors=True)
    full = {name: best[name, args.images] for name in paths}
    ips = {name: args.images / seconds for name, seconds in full.items()}
    marginal = {name: (best[name, sizes[1]] - best[name, sizes[0]]) / (sizes[1] - sizes[0])
                for name in paths}
    fixed = {name: full[name] - args.images * marginal[name] for name in paths}
    print(json.dumps({
        "benchmark": "capture", "model": "resnet18", "layers": LAYERS, "input": [3, 64, 64],
        "images": args.images, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in ips.items()},
        "capture_over_plain": round(full["deepprofile_capture"] / full["plain_forward"], 3),
        "capture_over_feature_extractor": round(
            full["deepprofile_capture"] / full["feature_extractor"], 3),
        "sizes": list(sizes),
        "marginal_ms_per_image": {k: round(1000 * v, 3) for k, v in marginal.items()},
        "fixed_setup_s": {k: round(v, 3) for k, v in fixed.items()},
        "marginal_capture_over_plain": round(
            marginal["deepprofile_capture"] / marginal["plain_forward"], 3),
        "target_capture_over_plain": 1.10,
    }, indent=1))


if __name__ == "__main__":
    main()
