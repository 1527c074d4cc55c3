"""The mapper section: per-layer graph statistics, purity, graph distances, pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Frame,
    Grid,
    Section,
    Table,
    Text,
    fmt,
    pct,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section


def _cover_warning(graph: Mapping[str, Any]) -> str | None:
    """The mapper page's too-fine-cover warning, from the stored lens and parameters."""
    from deepprofile.mapper.stats import sparse_cover_warning

    params = graph.get("params") or {}
    if graph.get("lens") is None or params.get("intervals") is None:
        return None
    return sparse_cover_warning(np.asarray(graph["lens"], dtype=np.float64),
                                int(params["intervals"]), float(params.get("overlap", 0.3)),
                                int(params.get("min_samples") or 5))


def mapper_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("mapper")
    if not data or not data.get("layers"):
        return None
    graphs = data["layers"]
    layers = list(graphs)
    pages = data.get("pages") or {}
    params = data.get("params") or {}
    sec = Section(
        ctx.unique_id("mapper"), "Mapper graphs", key="mapper",
        intro=f"Mapper graphs of each layer (lens {params.get('lens')}, "
              f"{params.get('intervals')} intervals, overlap {params.get('overlap')}, DBSCAN "
              "clusters). Each node is a cluster of samples with similar activations; purity "
              "says how much a node mixes classes. The interactive pages (open them below) "
              "show every node's images and label histogram.")
    rows = []
    for layer in layers:
        s = graphs[layer].get("stats", {})
        page = pages.get(layer)
        rows.append([
            layer, fmt(s.get("n_points")), fmt(s.get("n_nodes")), fmt(s.get("n_edges")),
            fmt(s.get("n_components")), fmt(s.get("n_loops")), pct(s.get("uncovered_fraction")),
            fmt(s.get("node_purity")), fmt(s.get("class_purity_mean")),
            ctx.link("open page", page) if page else "no page",
        ])
    sec.add(Table(["layer", "points", "nodes", "edges", "components", "loops", "in no node",
                   "node purity", "class purity", "interactive page"], rows,
                  numeric=[False] + [True] * 8 + [False],
                  caption="Per layer: graph size, connected components, independent loops, "
                          "share of samples in no node (DBSCAN noise), mean node purity "
                          "(1 = every node holds one class) and mean class purity."))
    for layer in layers:
        warning = _cover_warning(graphs[layer])
        if warning:
            sec.add(Text(f"{layer}: {warning}", note=True))
    purity = {
        "node purity": [graphs[n].get("stats", {}).get("node_purity") for n in layers],
        "class purity (mean)": [graphs[n].get("stats", {}).get("class_purity_mean")
                                for n in layers],
        "samples in no node": [graphs[n].get("stats", {}).get("uncovered_fraction")
                               for n in layers],
    }
    grid = [ctx.figure(
        F.lines_by_layer(layers, purity, ytitle="fraction", yrange=[0, 1.02],
                         dashed=["samples in no node"]),
        "Purity by depth: deeper layers of a trained network usually give purer nodes "
        "(solid lines rising); the dashed line is the share of samples left out of every "
        "node.", title="Purity by depth", height=360)]
    class_ids = sorted({int(k) for n in layers
                        for k in (graphs[n].get("stats", {}).get("class_purity") or {})})
    if class_ids:
        names = [n for n in (graphs[layers[0]].get("class_names") or [])] or ctx.class_names
        labels = [str(names[c]) if c < len(names) else str(c) for c in class_ids]
        values = [[(graphs[n].get("stats", {}).get("class_purity") or {}).get(str(c))
                   for c in class_ids] for n in layers]
        grid.append(ctx.figure(
            F.class_purity_heatmap(layers, labels, values),
            "Class purity per layer and class: how cleanly each class is separated into "
            "its own nodes (bright = separated; blank = the class lies in no node).",
            title="Class purity", height=360))
    sec.add(Grid(grid))
    dist = data.get("distances") or {}
    if dist:
        items = []
        labels = {"coot": "hypergraph co-optimal transport distance",
                  "vi": "variation of information (nats)"}
        for method, m in dist.items():
            items.append(ctx.figure(
                F.heatmap(m["values"], m["layers"], m["layers"], colorscale="Viridis",
                          reverse=True, colorbar=method),
                f"Layer × layer mapper graph distance: {labels.get(method, method)}; 0 on "
                "the diagonal, bright cells are layers whose graphs group the samples alike.",
                title=f"Graph distance ({method})", height=380))
        sec.add(ctx.heading("Graph distances between layers", "mapper-distances"), Grid(items))
    if pages:
        sec.add(ctx.heading("Interactive mapper pages", "mapper-pages"))
        sec.add(Text("Each page is a standalone file next to the results (drag nodes, hover "
                     "for members, colour by label, lens or confidence). They are embedded "
                     "below; open one to load it, or follow its link to see it full size."))
        for layer in layers:
            if layer in pages:
                link = ctx.link(f"mapper page of {layer}", pages[layer])
                sec.add(Frame(ctx.unique_id(f"frame-{layer}"), link.href,
                              f"Mapper graph of {layer}",
                              caption="missing: run deepprofile mapper again" if link.missing
                              else ""))
    return sec


register_section(mapper_section)
