"""Benchmark: weight spectra of every Conv/Linear layer of torchvision's resnet50 (random init,
no download) and projection throughput for one conv layer, each against a straightforward
per-layer / per-image numpy reference computed in the same run.

Ours: singular values from float64 Gram eigenvalues (numpy ``eigvalsh``), the
Clauset power-law scan vectorised over all ``xmin`` candidates; projections of a whole batch
as one matrix product on the layer's output. Reference: ``np.linalg.svd`` with vectors per
layer, the power-law fit as a loop over candidates (as the ``powerlaw`` package does it),
and projections one image at a time from numpy im2col patches (as pnnl/DeepDataProfiler,
batch size 1). The MP fit is the same function in both (it is not the bottleneck).

Prints one JSON object. Run: ``python benchmarks/spectral.py [--images 64]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torchvision
from torch import nn

from deepprofile.spectral.conv_svd import layer_svd, weight_layers
from deepprofile.spectral.projection import ProjectionAccumulator
from deepprofile.spectral.rmt import (
    WeightSpectrumAnalyzer,
    fit_marchenko_pastur,
)


def naive_power_law(x: np.ndarray, min_tail: int = 5) -> tuple[float, float]:
    x = np.sort(x)
    x = x[x > x[-1] * 1e-12]
    best = (np.inf, np.nan, np.nan)
    for i in range(len(x) - min_tail + 1):
        tail = x[i:]
        denom = np.sum(np.log(tail / x[i]))
        if denom <= 0:
            continue
        alpha = 1 + len(tail) / denom
        cdf = 1 - (tail / x[i]) ** (1 - alpha)
        n = len(tail)
        d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
        if d < best[0]:
            best = (d, alpha, x[i])
    return best[1], best[2]


def reference_spectra(model: nn.Module, names: list[str]) -> dict[str, dict]:
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        w = modules[name].weight.detach().double().reshape(modules[name].weight.shape[0], -1)
        w = w.numpy()
        u, s, vh = np.linalg.svd(w, full_matrices=False)
        p, n = min(w.shape), max(w.shape)
        eig = np.sort(s**2 / n)
        mp = fit_marchenko_pastur(eig, p / n) if len(eig) >= 10 else None
        alpha, xmin = naive_power_law(eig) if len(eig) >= 10 else (None, None)
        out[name] = {"eig": eig, "alpha": alpha, "xmin": xmin, "mp_ks": mp and mp.ks}
    return out


def numpy_im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
    win = win[:, ::stride, ::stride]  # (c, H', W', k, k)
    c, h, w = win.shape[:3]
    return win.transpose(0, 3, 4, 1, 2).reshape(c * k * k, h * w)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--ref-images", type=int, default=16)
    parser.add_argument("--layer", default="layer3.0.conv2")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for our timings")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    names = weight_layers(model)

    # -- weight spectra -------------------------------------------------------------------
    def best_of(fn, repeats):
        times, value = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    t_ours, ours = best_of(
        lambda: WeightSpectrumAnalyzer(compare_random_init=False, quiet=True).fit(model).result_,
        args.repeats)
    t0 = time.perf_counter()
    ref = reference_spectra(model, names)
    t_ref = time.perf_counter() - t0
    t_both, both = best_of(
        lambda: WeightSpectrumAnalyzer(compare_random_init=True, quiet=True).fit(model),
        args.repeats)

    eig_err = max(
        float(np.max(np.abs(lay.eigenvalues - ref[lay.layer]["eig"])) / ref[lay.layer]["eig"][-1])
        for lay in ours.layers
    )
    alpha_err = max(
        abs(lay.alpha - ref[lay.layer]["alpha"]) for lay in ours.layers
        if lay.alpha is not None and ref[lay.layer]["alpha"] is not None
    )

    # -- projection throughput ---------------------------------------------------------------
    conv = dict(model.named_modules())[args.layer]
    svd = layer_svd(conv, args.layer)
    cin = conv.in_channels
    size = 28 if conv.stride[0] == 2 else 14
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(args.images, cin, size, size, generator=gen))
    acc = ProjectionAccumulator(svd)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, args.images, 32):
            out = conv(x[start:start + 32])
            acc.add_output(out, np.zeros(len(out), dtype=int), np.arange(len(out)))
    t_proj = time.perf_counter() - t0
    shares_ours = np.concatenate(acc._shares)
    with torch.no_grad():
        outs = [conv(x[start:start + 32]) for start in range(0, args.images, 32)]
    only = ProjectionAccumulator(svd)
    t0 = time.perf_counter()
    for out in outs:
        only.add_output(out, np.zeros(len(out), dtype=int), np.arange(len(out)))
    t_only = time.perf_counter() - t0

    sv = svd.singular_values[:, None] * svd.Vh
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    ref_shares = []
    t0 = time.perf_counter()
    for i in range(args.ref_images):
        patches = numpy_im2col(x[i].double().numpy(), k, s, p)
        coeff = sv @ patches
        energy = (coeff**2).sum(axis=1)
        ref_shares.append(energy / energy.sum())
    t_proj_ref = time.perf_counter() - t0
    share_err = float(np.max(np.abs(np.stack(ref_shares) - shares_ours[: args.ref_images])))

    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "model": "torchvision resnet50, weights=None (seed 0)",
        "n_weight_layers": len(names),
        "timings": f"best of {args.repeats} for ours, one run for the reference",
        "spectra_seconds": round(t_ours, 3),
        "spectra_with_random_init_copy_seconds": round(t_both, 3),
        "reference_numpy_loop_seconds": round(t_ref, 3),
        "spectra_speedup": round(t_ref / t_ours, 2),
        "max_relative_eigenvalue_difference": eig_err,
        "max_alpha_difference": alpha_err,
        "alpha_hat": ours.alpha_hat,
        "alpha_hat_random_init_copy": both.random_init_.alpha_hat,
        "under_a_minute": t_both < 60,
        "projection_layer": args.layer,
        "projection_input": [cin, size, size],
        "projection_images_per_second": round(args.images / t_proj, 1),
        "projection_only_images_per_second_given_outputs": round(args.images / t_only, 1),
        "reference_per_image_numpy_images_per_second": round(args.ref_images / t_proj_ref, 1),
        "projection_speedup": round((args.images / t_proj) / (args.ref_images / t_proj_ref), 2),
        "max_share_difference": share_err,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
