"""The attribution section: example maps, robustness, manifold alignment, nodes."""

from __future__ import annotations

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    ImageCell,
    ImageGrid,
    Section,
    Table,
    Text,
    fmt,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.images import MAX_SIDE, map_data_uri
from deepprofile.report.registry import register_section


def attribution_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("attribution")
    if not data:
        return None
    params = data.get("params", {})
    methods = data.get("methods", {})
    sec = Section(
        ctx.unique_id("attribution"), "Attributions", key="attribution",
        intro=f"Which input pixels drive the model's prediction, for {params.get('n_images')} "
              f"images, by several methods: integrated gradients (IG), SmoothGrad, "
              f"SDE-smoothed IG (noise in the residual stream, σ in {params.get('sigmas')}), "
              "boundary IG (BIG) and others; then how robust and how aligned with the data "
              "manifold each method's maps are.")
    ex = data.get("examples") or {}
    sal = ex.get("saliency") or {}
    if ex.get("images") and sal:
        keys = list(sal)
        labels_of = ex.get("labels_of_methods") or {}
        rows, row_titles = [], []
        for i, image in enumerate(ex["images"]):
            lab = ctx.class_name(ex["labels"][i]) if ex.get("labels") else "?"
            pred = ctx.class_name(ex["predictions"][i]) if ex.get("predictions") else "?"
            title = f"label {lab}, pred {pred}"
            row_titles.append(title)
            cells = [ImageCell(map_data_uri(image, colorscale="Greys"), f"input: {title}")]
            for k in keys:
                method = str(labels_of.get(k, k))
                cells.append(ImageCell(map_data_uri(sal[k][i]), f"{method}: {title}"))
            rows.append(cells)
        sec.add(ImageGrid(
            ctx.unique_id("attribution-maps"),
            "Example grid: each row an image (first column) and its saliency map under "
            "every method (|attribution| summed over channels, each map scaled to its own "
            "maximum: black = 0, bright yellow = the map's maximum; maps larger than "
            f"{MAX_SIDE} pixels are averaged down). Smoother, more object-shaped maps are "
            "easier to trust.", rows, column_titles=["input"] + [
                str(labels_of.get(k, k)) for k in keys], row_titles=row_titles,
            title="Attribution maps", size=max(64, min(MAX_SIDE, 960 // (1 + len(keys))))))
    table = (data.get("robustness") or {}).get("table") or []
    if table:
        keys = [k for k in table[0] if k != "method" and not k.endswith(".kendall")]
        nice = {
            "random.topk_intersection": "top-k overlap (noise)",
            "random.spearman": "rank corr. (noise)", "random.kendall": "Kendall τ (noise)",
            "random.com_shift": "centre shift (noise)",
            "topk_attack.topk_intersection": "top-k overlap (attack)",
            "topk_attack.spearman": "rank corr. (attack)",
            "topk_attack.kendall": "Kendall τ (attack)",
            "topk_attack.com_shift": "centre shift (attack)",
            "random.n_kept": "images kept (noise)",
            "topk_attack.n_kept": "images kept (attack)",
            "max_sensitivity": "max sensitivity", "infidelity": "infidelity",
            "total_variation": "total variation",
        }
        rows = [[methods.get(r["method"], {}).get("label", r["method"])]
                + [fmt(r.get(k)) for k in keys] for r in table]
        perts = (data.get("robustness") or {}).get("perturbations") or {}
        kept = "; ".join(f"{'noise' if q == 'random' else 'attack'}: {p.get('n_kept')} of "
                         f"{p.get('n_images')}" for q, p in perts.items()
                         if p.get("n_kept") is not None)
        sec.add(ctx.heading("Robustness of the explanations", "attribution-robustness"))
        sec.add(Table(["method"] + [nice.get(k, k) for k in keys], rows,
                      numeric=[False] + [True] * len(keys),
                      caption="Per method, means over the images: how much the map keeps its "
                              "top pixels and ranking under small random noise and under a "
                              "targeted top-k attack (higher = more robust), how far its "
                              "centre of mass moves, max-sensitivity and infidelity (lower = "
                              "better) and total variation (lower = smoother). The map "
                              "comparisons under a perturbation average only the images whose "
                              "prediction it kept" + (f" ({kept})" if kept else "") + "."))
    grid = []
    align = data.get("alignment") or {}
    if align:
        grid.append(ctx.figure(
            F.alignment_strip({methods.get(k, {}).get("label", k): v
                               for k, v in align.items()}),
            "Alignment of each method's maps with the local tangent space of the data "
            "(dots: images, bars: mean) against random directions (diamonds); higher than "
            "random means the explanation follows the data manifold.",
            title="Manifold alignment", height=400))
    noisy = data.get("noisy_accuracy") or []
    if noisy:
        grid.append(ctx.figure(
            F.noisy_accuracy(noisy),
            "Accuracy of the network with diffusion noise of strength σ in its residual "
            "stream (mean ± std over draws): the SDE smoothing is only meaningful while "
            "this stays near the σ = 0 accuracy.", title="Accuracy under residual noise",
            height=400))
    if grid:
        sec.add(Grid(grid))
    notes = []
    b = data.get("boundary") or {}
    if b:
        notes.append(f"Boundary search (BIG): a decision boundary was found for "
                     f"{b.get('n_found')} of {b.get('n_images')} images.")
    checks = data.get("checks") or {}
    if "ig_completeness_max_rel_delta" in checks:
        notes.append(f"IG completeness check: largest relative gap between the attribution "
                     f"sum and f(x) - f(baseline) is {fmt(checks['ig_completeness_max_rel_delta'])}"
                     f" ({checks.get('ig_n_steps')} steps).")
    for note in notes:
        sec.add(Text(note, note=True))
    nodes = data.get("nodes") or {}
    if nodes.get("nodes"):
        order = nodes.get("node_order") or list(nodes["nodes"])
        shown = order[:16]
        sec.add(ctx.heading(f"Attributions per mapper node ({nodes.get('layer')})",
                            "attribution-nodes"))
        cells = []
        for nid in shown:
            nd = nodes["nodes"][nid]
            lc = nd.get("label_counts") or {}
            top = max(lc.items(), key=lambda kv: kv[1])[0] if lc else "?"
            label = (f"{nid.replace('_cluster', '/c')} · n={nd.get('n_members')} · mostly "
                     f"{ctx.class_name(top)}")
            cells.append(ImageCell(map_data_uri(np.asarray(nd.get("mean_map") or [[0]])),
                                   label, label))
        sec.add(ImageGrid(
            ctx.unique_id("attribution-node-maps"),
            f"Mean {nodes.get('method')} saliency map of the images in each mapper node of "
            f"{nodes.get('layer')} (label: node, size, majority label; the first "
            f"{len(shown)} of {len(order)} nodes; black = 0, yellow = the map's maximum). "
            "Nodes whose maps differ rely on different evidence.",
            [cells[i:i + 6] for i in range(0, len(cells), 6)], title="Mean map per node",
            size=120))
        rows = []
        for nid in order:
            nd = nodes["nodes"][nid]
            lc = sorted((nd.get("label_counts") or {}).items(), key=lambda kv: -kv[1])
            pc = sorted((nd.get("prediction_counts") or {}).items(), key=lambda kv: -kv[1])
            rows.append([nid, fmt(nd.get("n_members")), fmt(nd.get("n_explained")),
                         ", ".join(f"{ctx.class_name(k)}:{v}" for k, v in lc[:4]),
                         ", ".join(f"{ctx.class_name(k)}:{v}" for k, v in pc[:3]),
                         fmt(nd.get("concentration")), fmt(nd.get("alignment"))])
        sec.add(Table(["node", "members", "explained", "labels", "predictions",
                       "concentration", "alignment"], rows,
                      numeric=[False, True, True, False, False, True, True],
                      caption="Per node: members, images explained, label and prediction "
                              "counts, how concentrated the mean map is (share of mass in "
                              "its top 10 % pixels) and its manifold alignment."))
    return sec


register_section(attribution_section)
