"""Sections of the comparison report of two runs (read from ``results/compare.json``).

Each builder registers itself in :data:`~deepprofile.report.registry.COMPARE_SECTIONS`
with ``register_section(builder, registry=COMPARE_SECTIONS)``, in page order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    Section,
    Table,
    Text,
    dataset_text,
    fmt,
    pct,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import COMPARE_SECTIONS, register_section


def _cmp(ctx: ReportContext) -> dict[str, Any] | None:
    return ctx.result("compare")


def compare_runs_section(ctx: ReportContext) -> Section | None:
    data = _cmp(ctx)
    if not data:
        return None
    a, b = data.get("run_a", {}), data.get("run_b", {})
    sec = Section(ctx.unique_id("runs"), "Runs compared", key="runs",
                  intro="Run A and run B: two captures of the same layers on the same images "
                        "(e.g. two seeds, or before and after fine-tuning).")
    keys = [("path", "Run folder"), ("model", "Model"), ("checkpoint", "Checkpoint"),
            ("weights_hash", "Weights hash"), ("dataset", "Dataset"),
            ("n_samples", "Samples"), ("accuracy", "Accuracy"), ("layers", "Layers"),
            ("date", "Captured")]
    rows = []
    for key, label in keys:
        va, vb = a.get(key), b.get(key)
        conv = {"dataset": dataset_text, "accuracy": pct, "n_samples": fmt,
                "layers": lambda v: ", ".join(v or [])}.get(key, lambda v: "–" if v is None
                                                           else str(v))
        rows.append([label, conv(va), conv(vb), "same" if va == vb else "differs"])
    sec.add(Table(["", "run A", "run B", ""], rows,
                  caption="The two runs side by side."))
    checks = data.get("checks", {})
    diffs = checks.get("differences") or []
    notes = checks.get("notes") or []
    if diffs:
        sec.add(Text("Not comparable: " + "; ".join(diffs), note=True))
    else:
        sec.add(Text(f"Comparable: same dataset, same {fmt(a.get('n_samples'))} images in the "
                     f"same order, {len(checks.get('common_layers') or [])} common layers."))
    for note in notes:
        sec.add(Text(note, note=True))
    return sec


def compare_topology_section(ctx: ReportContext) -> Section | None:
    data = _cmp(ctx)
    topo = (data or {}).get("topology")
    if not topo:
        return None
    la, lb = list(topo["layers_a"]), list(topo["layers_b"])
    spec = topo.get("specificity", {})
    primary = topo.get("primary")
    sec = Section(ctx.unique_id("layer-matching"), "Layer matching", key="topology",
                  intro="Every layer of A against every layer of B: distances between their "
                        "persistence diagrams and their CKA similarity. If the two models "
                        "learned alike, each layer of A is nearest to the same layer of B "
                        "(specificity).")
    cross = {}
    for metric, by_dim in (topo.get("cross") or {}).items():
        for d, mat in sorted(by_dim.items(), key=lambda kv: -int(kv[0])):
            cross[f"{metric}/H{d}"] = np.asarray(mat, dtype=np.float64)
    if primary in cross:
        cross = {primary: cross[primary], **{k: v for k, v in cross.items() if k != primary}}
    grid = []
    if cross:
        first = next(iter(cross))
        marks = {key: list(enumerate(spec.get(key, {}).get("nearest", []))) for key in cross}
        grid.append(ctx.figure(
            F.heatmap_selector(cross, la, lb, colorscale="Viridis", reverse=True,
                               colorbar="distance", row_title="run A", col_title="run B",
                               marks_by_key=marks),
            f"Cross diagram distance ({first}; the menu switches measure), rows: layers of "
            "A, columns: layers of B. Outlined: the nearest B layer of each A layer; a "
            "clean diagonal means matching layers.", title="Topological distance A × B",
            height=420))
    for kind, mat in (topo.get("cka") or {}).items():
        key = f"cka_{kind}"
        marks = [(i, j) for i, j in enumerate(spec.get(key, {}).get("nearest", []))]
        grid.append(ctx.figure(
            F.heatmap(mat, la, lb, colorscale="Viridis", zmin=0, zmax=1, colorbar="CKA",
                      row_title="run A", col_title="run B", marks=marks),
            f"Cross {kind} CKA between layers of A (rows) and B (columns); outlined: the "
            "most similar B layer of each A layer.", title=f"{kind.capitalize()} CKA A × B",
            height=420))
    if grid:
        sec.add(Grid(grid))
    if spec:
        sec.add(Table(["measure", "specificity accuracy", "layers matched to themselves"],
                      [[k, pct(v.get("accuracy")),
                        f"{sum(bool(c) for c in v.get('correct', []))} of "
                        f"{sum(e >= 0 for e in v.get('expected', []))}"]
                       for k, v in spec.items()],
                      numeric=[False, True, False],
                      caption="Specificity of each measure: the share of layers of A whose "
                              "nearest layer of B is their counterpart (same name)."))
    matched = data.get("matched_layers") or []
    if matched:
        sec.add(Table(["layer of A", f"nearest in B ({primary})", "nearest in B (CKA)",
                       "counterpart in B"],
                      [[m["layer_a"], m.get("nearest_topology") or "–",
                        m.get("nearest_cka") or "–", m.get("counterpart") or "–"]
                       for m in matched],
                      caption="Matched layers: the nearest layer of B by topology and by CKA "
                              "for every layer of A, and the same-name layer used for the "
                              "per-layer comparisons below."))
    return sec


def compare_mapper_section(ctx: ReportContext) -> Section | None:
    data = _cmp(ctx)
    mp = (data or {}).get("mapper")
    if not mp:
        return None
    sec = Section(ctx.unique_id("compare-mapper"), "Mapper graphs A vs B", key="mapper",
                  intro="Distance between the mapper graph of each layer of A and that of its "
                        "matched layer of B, built on the same images: hypergraph co-optimal "
                        "transport with the point coupling fixed to the identity (0 = the "
                        "graphs group the images identically), and the agreement of the "
                        "point-to-node assignments.")
    rows_in = mp.get("layers") or []
    if not rows_in:
        sec.add(Text(mp.get("note") or "No layer pair could be compared.", note=True))
        return sec
    rows = [[r["layer_a"], r["layer_b"], fmt(r.get("coot")), fmt(r.get("vi")),
             fmt(r.get("ari")), fmt(r.get("coot_other_mean"))] for r in rows_in]
    sec.add(Table(["layer A", "layer B", "graph distance", "VI (nats)", "ARI",
                   "mean distance to other B layers"], rows,
                  numeric=[False, False, True, True, True, True],
                  caption="Per matched layer pair: co-optimal transport graph distance, "
                          "variation of information and adjusted Rand index of the node "
                          "assignments, and, for reference, the mean distance from the A "
                          "graph to the graphs of the other B layers."))
    labels = [f"{r['layer_a']} ↔ {r['layer_b']}" for r in rows_in]
    sec.add(ctx.figure(
        F.paired_bars(labels, [r.get("coot") for r in rows_in],
                      [r.get("coot_other_mean") for r in rows_in],
                      names=("matched layer", "other layers (mean)"),
                      ytitle="graph distance"),
        "Mapper graph distance of each matched pair (blue) against the mean distance to "
        "the other layers of B (orange): blue well below orange means the matched layers "
        "organise the images alike.", title="Graph distance per matched layer", height=360))
    if mp.get("note"):
        sec.add(Text(mp["note"], note=True))
    return sec


def compare_spectral_section(ctx: ReportContext) -> Section | None:
    data = _cmp(ctx)
    sp = (data or {}).get("spectral")
    angles = (data or {}).get("principal_angles")
    if not sp and not angles:
        return None
    sec = Section(ctx.unique_id("compare-spectral"), "Weight spectra A vs B", key="spectral",
                  intro="Random-matrix figures of each weight layer in both models, and how "
                        "far apart their top singular subspaces are.")
    if sp and sp.get("layers"):
        rows_in = sp["layers"]
        names = [r["layer"] for r in rows_in]
        rows = [[r["layer"], fmt(r.get("alpha_a"), 2), fmt(r.get("alpha_b"), 2),
                 fmt(r.get("spectral_norm_a")), fmt(r.get("spectral_norm_b")),
                 fmt(r.get("stable_rank_a"), 2), fmt(r.get("stable_rank_b"), 2)]
                for r in rows_in]
        ah = sp.get("alpha_hat") or {}
        sec.add(Text(f"Model α̂: A {fmt(ah.get('a'), 2)}, B {fmt(ah.get('b'), 2)}."))
        sec.add(Table(["layer", "α A", "α B", "spectral norm A", "spectral norm B",
                       "stable rank A", "stable rank B"], rows,
                      numeric=[False] + [True] * 6,
                      caption="Per weight layer: power-law exponent, largest singular value "
                              "and stable rank in each model."))
        sec.add(Grid([
            ctx.figure(F.paired_bars(names, [r.get("alpha_a") for r in rows_in],
                                     [r.get("alpha_b") for r in rows_in],
                                     names=("run A", "run B"), ytitle="power-law α"),
                       "Power-law exponent α per layer in A and B (missing bars: too few "
                       "eigenvalues to fit); lower α = heavier-tailed, more structured "
                       "weights.", title="α per layer", height=360),
            ctx.figure(F.paired_bars(names, [r.get("spectral_norm_a") for r in rows_in],
                                     [r.get("spectral_norm_b") for r in rows_in],
                                     names=("run A", "run B"), ytitle="spectral norm"),
                       "Largest singular value per layer in A and B.",
                       title="Spectral norm per layer", height=360),
            ctx.figure(F.paired_bars(names, [r.get("stable_rank_a") for r in rows_in],
                                     [r.get("stable_rank_b") for r in rows_in],
                                     names=("run A", "run B"), ytitle="stable rank"),
                       "Stable rank per layer in A and B: the effective number of "
                       "directions each layer uses.", title="Stable rank per layer",
                       height=360),
        ]))
    if angles and angles.get("layers"):
        rows_in = angles["layers"]
        k = angles.get("k")
        sec.add(ctx.heading("Principal angles between top singular subspaces",
                            "compare-angles"))
        sec.add(ctx.figure(
            F.angle_bars([r["layer"] for r in rows_in], [r["mean_deg"] for r in rows_in],
                         [r["min_deg"] for r in rows_in], [r["max_deg"] for r in rows_in],
                         [r["random_mean_deg"] for r in rows_in]),
            f"Principal angles between the spans of the top-{k} left singular vectors of "
            "each layer in A and in B (bar: mean, whiskers: smallest to largest angle), "
            "against two random subspaces of the same size (diamonds). Near 0°: same "
            "output directions; near the random level: unrelated (expected for two seeds, "
            "whose channels are permuted).", title="Principal angles per layer", height=380))
        sec.add(Table(["layer", "k", "output dim", "smallest angle", "mean angle",
                       "largest angle", "random mean"],
                      [[r["layer"], fmt(r.get("k")), fmt(r.get("dim")),
                        f"{r['min_deg']:.1f}°", f"{r['mean_deg']:.1f}°",
                        f"{r['max_deg']:.1f}°", f"{r['random_mean_deg']:.1f}°"]
                       for r in rows_in],
                      numeric=[False] + [True] * 6,
                      caption="Principal angles per layer (scipy.linalg.subspace_angles) and "
                              "the mean angle between random subspaces of the same size."))
    if angles and angles.get("note"):
        sec.add(Text(angles["note"], note=True))
    return sec


register_section(compare_runs_section, registry=COMPARE_SECTIONS)
register_section(compare_topology_section, registry=COMPARE_SECTIONS)
register_section(compare_mapper_section, registry=COMPARE_SECTIONS)
register_section(compare_spectral_section, registry=COMPARE_SECTIONS)


def compare_concepts_section(ctx: ReportContext) -> Section | None:
    """Concept curves of both runs: probe accuracy per layer, A beside B, with the
    shuffled-label control (written by :func:`deepprofile.concepts.compare.concept_curves`)."""
    import plotly.graph_objects as go

    data = _cmp(ctx)
    curves = (data or {}).get("concepts")
    if not curves or not curves.get("concepts"):
        return None
    layers = curves["layers"]
    sec = Section(ctx.unique_id("concepts"), "Concepts", key="concepts",
                  intro="Which layer knows which concept in each run: the balanced accuracy "
                        "of a linear probe per layer (5-fold), against the same probe on "
                        "shuffled labels (chance for this data).")
    fig = go.Figure()
    for i, row in enumerate(curves["concepts"]):
        colour = F.PALETTE[i % len(F.PALETTE)]
        for key, dash in (("a", "solid"), ("b", "dash")):
            fig.add_trace(go.Scatter(
                x=layers, y=row[key]["accuracy"], mode="lines+markers",
                name=f"{row['concept']} ({key.upper()})", legendgroup=row["concept"],
                line={"dash": dash, "color": colour}))
    fig.update_layout(xaxis_title="layer", yaxis_title="balanced accuracy",
                      yaxis_range=[0.4, 1.02])
    sec.add(ctx.figure(fig, "Probe accuracy per layer: run A solid, run B dashed.",
                       title="Concept curves", height=420, wide=True))
    rows = []
    for row in curves["concepts"]:
        cells = [row["concept"]]
        for j in range(len(layers)):
            cells.append(f"{fmt(row['a']['accuracy'][j], 2)} / {fmt(row['b']['accuracy'][j], 2)}")
        cells += [row["a"]["first_layer"] or "–", row["b"]["first_layer"] or "–"]
        rows.append(cells)
    sec.add(Table(["concept", *layers, "first layer A", "first layer B"], rows,
                  caption="Probe balanced accuracy per layer (A / B) and the first layer "
                          "that decodes the concept (above its shuffled control, within the "
                          "margin of the best layer)."))
    return sec


register_section(compare_concepts_section, registry=COMPARE_SECTIONS)
