"""The topology section: persistence, diagram distances, CKA, specificity, sensitivity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    Section,
    Table,
    fmt,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section


def _diagram_arrays(diagrams: Mapping[str, Any]) -> dict[str, dict[int, np.ndarray]]:
    out = {}
    for layer, d in diagrams.items():
        out[layer] = {int(k): np.asarray(v, dtype=np.float64).reshape(-1, 2)
                      for k, v in (d.get("diagrams") or {}).items()}
    return out


def _matrix_choices(distances: Mapping[str, Any], primary: str | None = None
                    ) -> dict[str, np.ndarray]:
    """``"metric H1"`` -> matrix, the primary (first metric, H1) first."""
    out: dict[str, np.ndarray] = {}
    for metric, by_dim in distances.items():
        for d, mat in sorted(by_dim.items(), key=lambda kv: -int(kv[0])):
            out[f"{metric} H{d}"] = np.asarray(mat, dtype=np.float64)
    if primary and primary in out:
        out = {primary: out[primary], **{k: v for k, v in out.items() if k != primary}}
    return out


def _n_features(summary: Mapping[str, Any]) -> int | None:
    """Every feature of a diagram: ``n_features`` counts the finite ones only, while
    ``n_above_noise`` also counts those that never die."""
    if summary.get("n_features") is None:
        return None
    return int(summary["n_features"]) + int(summary.get("n_essential") or 0)


def topology_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("topology")
    if not data:
        return None
    layers = [str(x) for x in data.get("layers", [])]
    params = data.get("params", {})
    metrics = params.get("metrics") or list(data.get("distances", {}))
    dims = params.get("homology") or [0, 1]
    first = next(iter(data.get("clouds", {}).values()), {})
    sec = Section(
        ctx.unique_id("topology"), "Topology", key="topology",
        intro=f"Persistent homology of each layer's activation cloud ({data.get('cloud_kind')}"
              f" clouds, {first.get('n_points', '?')} points, "
              f"{first.get('normalize', params.get('normalize', '?'))} normalisation, "
              f"Vietoris-Rips, H{', H'.join(str(d) for d in dims)}). Layers whose clouds "
              "have similar shapes have close diagrams; CKA compares the representations "
              "themselves.")
    rows = []
    summaries = data.get("summaries", {})
    for layer in layers:
        c = data.get("clouds", {}).get(layer, {})
        for k, d in enumerate(dims):
            s = summaries.get(layer, {}).get(str(d), {})
            rows.append([layer if k == 0 else "", fmt(c.get("n_points")) if k == 0 else "",
                         fmt(c.get("dim")) if k == 0 else "", f"H{d}",
                         fmt(_n_features(s)), fmt(s.get("n_essential")),
                         fmt(s.get("n_above_noise")), fmt(s.get("total_persistence")),
                         fmt(s.get("max_persistence")), fmt(s.get("entropy"), 2)])
    cols = ["layer", "points", "dim", "homology", "features", "never die", "above noise",
            "total persistence", "max persistence", "entropy"]
    noise = next((s.get("noise_threshold") for v in summaries.values() for s in v.values()),
                 None)
    sec.add(Table(cols, rows, numeric=[False, True, True, False] + [True] * 6,
                  caption="Per layer: cloud size and dimension; per homology dimension the "
                          "number of features (all, those that never die included), those "
                          "that never die, those living longer "
                          f"than the noise threshold ({fmt(noise)}), the summed and the "
                          "longest lifetime and the persistence entropy."))
    diagrams = _diagram_arrays(data.get("diagrams", {}))
    if diagrams:
        sec.add(ctx.heading("Persistence diagrams and barcodes", "topology-diagrams"))
        sec.add(ctx.figure(
            F.persistence_diagrams(diagrams),
            "Each dot is a topological feature born at x and dying at y (H0: connected "
            "components, blue; H1: loops, red); the farther above the diagonal, the more "
            "persistent. Triangles on the top edge never die.", wide=True,
            title="Persistence diagrams per layer"))
        bar_dim = 1 if 1 in dims else dims[0]
        sec.add(ctx.figure(
            F.barcodes(diagrams, dim=bar_dim),
            f"H{bar_dim} barcodes: one bar per feature from birth to death (the 40 longest, "
            "ordered by birth); a few long bars over many short ones means clear structure.",
            wide=True, title=f"H{bar_dim} barcodes per layer"))
    curves = {
        layer: {int(d): (s.get("betti_grid", []), s.get("betti_curve", []))
                for d, s in summaries.get(layer, {}).items() if s.get("betti_curve")}
        for layer in layers
    }
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        sec.add(ctx.figure(
            F.betti_curves(curves),
            "Betti curves: how many components (H0) and loops (H1) exist at each "
            "filtration scale; curves that fall later mean a more spread-out cloud.",
            title="Betti curves", height=340))
    dist = data.get("distances") or {}
    cka = data.get("cka") or {}
    grid = []
    if dist:
        primary = f"{metrics[0]} H{1 if 1 in dims else dims[0]}" if metrics else None
        choices = _matrix_choices(dist, primary)
        key = next(iter(choices))
        grid.append(ctx.figure(
            F.heatmap_selector(choices, layers, layers, colorscale="Viridis",
                               colorbar="distance", reverse=True, title=""),
            f"Layer × layer distance between persistence diagrams ({key}; the menu "
            "switches metric and homology dimension). Bright cells: layers with similar "
            "topology.", title="Diagram distances", height=420))
    if cka:
        choices = {f"{k} CKA": np.asarray(v, dtype=np.float64) for k, v in cka.items()}
        grid.append(ctx.figure(
            F.heatmap_selector(choices, layers, layers, colorscale="Viridis", zmin=0,
                               zmax=1, colorbar="CKA", title=""),
            "Layer × layer centred kernel alignment of the activations (1: same "
            "representation up to rotation and scale, 0: unrelated); compare with the "
            "diagram distances on the left.", title="CKA similarity", height=420))
    if grid:
        sec.add(ctx.heading("Layer × layer distances and CKA", "topology-matrices"),
                Grid(grid))
    sens = data.get("sensitivity") or {}
    if sens:
        sdim = 1 if 1 in dims else dims[0]
        sec.add(ctx.figure(
            F.sensitivity_curves(sens, dim=sdim),
            f"Sensitivity check: H{sdim} diagram distance between each layer and itself with "
            "its top k principal components removed; a distance that grows with k means the "
            "topology is carried by the dominant directions.",
            title="Sensitivity to principal components", height=340))
    return sec


register_section(topology_section)
