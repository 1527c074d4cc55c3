"""Capture throughput: deepprofile's store-writing capture vs a plain forward pass and
torchvision's ``create_feature_extractor``, on resnet18 (random init), 64x64 inputs.

Prints one JSON object: images/s of each path, the overhead ratios and the target check.
Every path runs on the same in-memory images in the same process. The paths are
*paired*: each repeat runs every path back to back (the order rotating between repeats,
so none always runs first), and the ratios are medians over repeats of the ratio within
a repeat, which cancels the slow drift of a shared machine; the times are medians too.

Fixed and marginal costs: each path also runs on a quarter of the images; with the
median times t(n) at n = N/4 and N, the per-image (marginal) time is
(t(N) - t(N/4)) / (N - N/4) and the fixed cost t(N) - N x marginal (for the capture:
store creation, hashing the weights, the final fingerprint, the first write).
``marginal_capture_over_plain`` is the capture's per-image cost against a plain
forward pass's. ``--writer both`` measures the background writer thread and inline
writes side by side (``auto``, the default, is what ``capture_to_store`` picks here).
``fixed_parts_ms`` times the capture's fixed steps one by one (median of 5). The weights
hash is cached per process (:func:`deepprofile.provenance.weights_hash`); the benchmark
clears that cache before every capture, so each one pays for hashing like the first
capture of a model in a fresh process; ``--warm-hash`` keeps it, as on the command line,
where loading the checkpoint has hashed the weights already.

``--size`` sets the input resolution (default 64). At ``--size 32`` the forward pass is
about four times cheaper while a capture writes exactly as much (the layers are
averaged over space): a stand-in for a faster machine, where the forward pass speeds up
and the store's file writes need not.

    python benchmarks/capture.py [--images 1024] [--batch-size 32] [--repeats 5]
        [--writer auto|thread|inline|both] [--threads N] [--size 64] [--warm-hash]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from deepprofile import provenance
from deepprofile.capture import capture_to_store
from deepprofile.capture.runner import background_writes_pay
from deepprofile.models import build_model

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
TARGET = 1.10


def _median_ms(fn: Callable[[int], object], repeats: int = 5) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def fixed_parts(model: torch.nn.Module, tmp: Path, n_chunks: int, chunk: int) -> dict[str, float]:
    """Milliseconds of each fixed step of a capture, timed alone (median of 5)."""
    from deepprofile.capture.store import ActivationStore
    from deepprofile.provenance import _hash_cache, package_versions, weights_hash

    shapes = {"layer1": (64,), "layer2": (128,), "layer3": (256,), "layer4": (512,)}
    kw = dict(config={"x": 1}, layer_shapes=shapes, reductions=dict.fromkeys(shapes, "mean"),
              output_shapes={k: (s[0], 8, 8) for k, s in shapes.items()},
              n_samples=n_chunks * chunk, num_classes=10, chunk_size=chunk,
              metadata={"model": "m", "weights_hash": "h", "dataset": {}, "class_names": []})
    rng = np.random.default_rng(0)
    block = {f"layers/{k}": rng.random((chunk, *s), dtype=np.float32) for k, s in shapes.items()}
    block |= {"labels": np.zeros(chunk, np.int64), "predictions": np.zeros(chunk, np.int64),
              "indices": np.arange(chunk), "logits": rng.random((chunk, 10), dtype=np.float32)}
    stores = [ActivationStore.create(tmp / f"f{i}.zarr", **kw) for i in range(5)]
    for store in stores:
        for c in range(n_chunks):
            store.write_chunk(c * chunk, block)
    parts = {
        "weights_hash (first call)": _median_ms(
            lambda i: (_hash_cache.clear(), weights_hash(model))),
        "weights_hash (cached, unchanged weights)": _median_ms(lambda i: weights_hash(model)),
        "package_versions (cached)": _median_ms(lambda i: package_versions()),
        "store_create": _median_ms(lambda i: ActivationStore.create(tmp / f"c{i}.zarr", **kw)),
        "write_chunk": _median_ms(lambda i: stores[i].write_chunk(0, block)),
        "finalize (accuracy + fingerprint)": _median_ms(lambda i: stores[i].finalize()),
    }
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--writer", choices=("auto", "thread", "inline", "both"), default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default). One thread is steadier on a "
                             "shared machine, where a stalled thread stalls the whole batch")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--warm-hash", action="store_true",
                        help="keep the weights-hash cache between captures, as after "
                             "load_model (the command line's path); default: cleared")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip timing the fixed steps one by one")
    args = parser.parse_args()

    from torchvision.models.feature_extraction import create_feature_extractor

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
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

    def capture(background: bool | None) -> Callable[[int], None]:
        def run(n: int) -> None:
            path = tmp / "store.zarr"
            if not args.warm_hash:  # every capture hashes the weights as a first one
                provenance._hash_cache.clear()
            capture_to_store(model, dataset, LAYERS, path, reductions="mean",
                             batch_size=args.batch_size, chunk_size=256, overwrite=True,
                             quiet=True, indices=range(n), background_writes=background)
            shutil.rmtree(path)
        return run

    writers = {"auto": [("capture", None)], "thread": [("capture", True)],
               "inline": [("capture", False)],
               "both": [("capture_thread", True), ("capture_inline", False)]}[args.writer]
    paths: dict[str, Callable[[int], None]] = {"plain_forward": plain, "feature_extractor": fx}
    paths |= {name: capture(bg) for name, bg in writers}
    captures = [name for name, _ in writers]
    small = max(args.batch_size, args.images // 4)
    sizes = (small, args.images)
    times: dict[tuple[str, int], list[float]] = {(p, n): [] for p in paths for n in sizes}
    plain(args.images)  # warm-up
    for name in captures:
        paths[name](small)
    order = list(paths)
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        rotated = order[rep % len(order):] + order[: rep % len(order)]
        for n in sizes:
            for name in rotated:
                t0 = time.perf_counter()
                paths[name](n)
                times[name, n].append(time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
    med = {key: statistics.median(v) for key, v in times.items()}
    N = args.images
    marginal = {p: (med[p, sizes[1]] - med[p, sizes[0]]) / (sizes[1] - sizes[0]) for p in paths}
    fixed = {p: med[p, N] - N * marginal[p] for p in paths}

    def paired(name: str) -> float:
        """Median over repeats of (this path's time / plain forward's time), at N images."""
        return statistics.median(a / b for a, b in zip(times[name, N], times["plain_forward", N],
                                                       strict=True))

    ratios = {name: round(paired(name), 3) for name in captures}
    result = {
        "benchmark": "capture", "model": "resnet18", "layers": LAYERS,
        "input": [3, args.size, args.size],
        "images": N, "batch_size": args.batch_size, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(),
        "weights_hash": "cached (warm)" if args.warm_hash else "first call in every capture",
        "auto_writer": "thread" if background_writes_pay(torch.device("cpu")) else "inline",
        "load_average_1min": [round(x, 2) for x in load],
        "images_per_s_median": {p: round(N / med[p, N], 1) for p in paths},
        "capture_over_plain_paired_median": ratios,
        "capture_over_plain_each_repeat": {
            name: [round(a / b, 3) for a, b in zip(times[name, N], times["plain_forward", N],
                                                   strict=True)] for name in captures},
        "feature_extractor_over_plain_paired_median": round(paired("feature_extractor"), 3),
        "sizes": list(sizes),
        "marginal_ms_per_image": {p: round(1000 * v, 3) for p, v in marginal.items()},
        "marginal_capture_over_plain": {
            name: round(marginal[name] / marginal["plain_forward"], 3) for name in captures},
        "fixed_setup_s": {p: round(v, 3) for p, v in fixed.items()},
        "target": {"capture_over_plain_at_most": TARGET,
                   "met": {name: ratios[name] <= TARGET for name in captures}},
    }
    if not args.no_breakdown:
        result["fixed_parts_ms"] = fixed_parts(model, tmp, n_chunks=-(-N // 256), chunk=256)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
