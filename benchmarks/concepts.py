"""Benchmark: concept probes and TCAV, time per layer.

On the demo SmallResNet (random init, 3x32x32, widths 16/32/64) and ``n`` shapes images,
mean-pooled activations of ``stem``, ``layer1``, ``layer2``, ``layer3``, for the ``marker``
concept, measures per layer:

* ``probe_l2_s``: deepprofile's 5-fold L2 probe (:func:`fit_probe`), against
  ``reference_l2_s``: scikit-learn's own ``cross_val_score`` of
  ``make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))`` with the
  same folds (the same work: 5 fold fits + scoring; ours also refits on all data), and
  their ratio ``l2_ratio`` (minimum over ``--repeats`` alternating runs of each side);
* ``profile_s``: the whole per-layer profile of :func:`probe_layers` (L2, L1, 5 shuffled
  controls, sparsity search);
* ``tcav_s``: TCAV through captum for one concept and one class with 10 random
  counter-concepts of 20 images and 20 inputs (one layer per call).

    python benchmarks/concepts.py [--n 500] [--repeats 5] [--threads N]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deepprofile.concepts.analysis import probe_layers
    from deepprofile.concepts.capture import capture_arrays
    from deepprofile.concepts.probes import fit_probe
    from deepprofile.concepts.tcav import tcav_scores
    from deepprofile.data import ShapesDataset
    from deepprofile.models.small import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, in_channels=3).eval()
    ds = ShapesDataset(args.n, seed=1000, marker_rate=0.5, marker_base_rate=0.5)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    table = ds.concept_table()
    y = table["marker"].astype(bool)
    layers = ["stem", "layer1", "layer2", "layer3"]
    t = time.perf_counter()
    acts = capture_arrays(model, images, layers, {name: "mean" for name in layers})
    capture_s = time.perf_counter() - t
    rows = []
    for layer in layers:
        X = acts[layer].astype(np.float64)
        ref_model = make_pipeline(StandardScaler(), LogisticRegression(
            class_weight="balanced", max_iter=2000))
        ours_times, ref_times = [], []
        for _ in range(args.repeats):  # alternate the two sides; keep each side's minimum
            t = time.perf_counter()
            fit = fit_probe(X, y)
            ours_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = cross_val_score(ref_model, X, y, scoring="balanced_accuracy",
                                  cv=StratifiedKFold(5, shuffle=True, random_state=0))
            ref_times.append(time.perf_counter() - t)
        ours, ref_s = min(ours_times), min(ref_times)
        t = time.perf_counter()
        probe_layers({layer: X}, y, concept="marker")
        profile_s = time.perf_counter() - t
        t = time.perf_counter()
        tcav_scores(model, [layer], {"marker": images[y]}, images,
                    {0: images[table["label"] == 0][:20]}, n_random=10, n_concept_images=20,
                    seed=0)
        tcav_s = time.perf_counter() - t
        rows.append({
            "layer": layer, "n_features": int(X.shape[1]),
            "probe_l2_s": round(ours, 4), "reference_l2_s": round(ref_s, 4),
            "l2_ratio": round(ours / ref_s, 3),
            "accuracy": round(fit.balanced_accuracy, 4),
            "reference_accuracy": round(float(ref.mean()), 4),
            "profile_s": round(profile_s, 3), "tcav_s": round(tcav_s, 3),
        })
    print(json.dumps({
        "benchmark": "concepts", "n_images": args.n, "threads": torch.get_num_threads(),
        "capture_s": round(capture_s, 3), "layers": rows,
        "total_profile_s": round(sum(r["profile_s"] for r in rows), 3),
        "total_tcav_s": round(sum(r["tcav_s"] for r in rows), 3),
    }, indent=1))


if __name__ == "__main__":
    main()
