"""Benchmark: peak memory of the capture statistics, streaming vs the whole layer in memory.

Builds one store (synthetic ``flatten`` activations, ``(N, 32, 16, 16)`` float32, chunks of
256 samples) for N = 500 and N = 2000, then in a fresh process each computes the layer
statistics either streaming (:func:`deepprofile.capture.stats.capture_stats`, one chunk at
a time) or as before (the whole layer read with ``store.layer`` and passed to
``layer_stats``, the reference). Reports each process's peak RSS increase over its baseline
after imports (``ru_maxrss``), and that the two agree.

    python benchmarks/capture_stats_memory.py

Prints one JSON object (about a minute on 2 cores). Target: the streaming peak does not
grow with N (the in-memory one grows by the layer's size).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPE = (32, 16, 16)


def _make(path: Path, n: int) -> None:
    import numpy as np

    from deepprofile.capture.store import ActivationStore

    rng = np.random.default_rng(0)
    store = ActivationStore.create(
        path, config={"bench": n}, layer_shapes={"l": SHAPE}, reductions={"l": "flatten"},
        output_shapes={"l": SHAPE}, n_samples=n, num_classes=2, chunk_size=256,
        metadata={"model": "bench", "weights_hash": "x", "dataset": {"name": "bench"}})
    for start in range(0, n, 256):
        rows = min(256, n - start)
        acts = np.maximum(rng.normal(size=(rows, *SHAPE)), 0).astype(np.float32)
        store.write_chunk(start, {"layers/l": acts, "labels": np.zeros(rows, np.int64),
                                  "predictions": np.zeros(rows, np.int64),
                                  "indices": np.arange(start, start + rows),
                                  "logits": np.zeros((rows, 2), np.float32)})
    store.finalize()


def _child(path: str, mode: str) -> None:
    from deepprofile.capture.stats import capture_stats, layer_stats
    from deepprofile.capture.store import ActivationStore

    store = ActivationStore.open(path)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "streaming":
        std = capture_stats(store).layers[0].std
    else:
        std = layer_stats(store.layer("l"), "l", "flatten").std
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_increase_mb": (peak - base) / 1024, "std": std}))


def main() -> None:
    out: dict = {"layer_shape": list(SHAPE)}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (500, 2000):
            path = Path(tmp) / f"s{n}.zarr"
            _make(path, n)
            row = {"layer_mb": n * 4 * int(__import__("math").prod(SHAPE)) / 2**20}
            for mode in ("streaming", "in_memory"):
                proc = subprocess.run([sys.executable, __file__, "--child", str(path), mode],
                                      capture_output=True, text=True, check=True)
                row[mode] = json.loads(proc.stdout)
            row["std_rel_diff"] = abs(row["streaming"]["std"] - row["in_memory"]["std"]) / (
                row["in_memory"]["std"])
            out[f"n{n}"] = row
    out["streaming_growth_mb"] = (out["n2000"]["streaming"]["peak_increase_mb"]
                                  - out["n500"]["streaming"]["peak_increase_mb"])
    out["in_memory_growth_mb"] = (out["n2000"]["in_memory"]["peak_increase_mb"]
                                  - out["n500"]["in_memory"]["peak_increase_mb"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
