"""Cytoscape elements, colours, stylesheets and legends for the explorer's graphs.

Pure functions from a :class:`~deepprofile.explore.data.GraphView` and a colour column
to the JSON dash-cytoscape draws. Node positions are computed here once per graph
(networkx's seeded spring layout), so recolouring or highlighting never moves a node.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepprofile.explore.data import Column, GraphView, node_values

# matplotlib's tab10 then tab20's light tones: distinct categories up to 20
CATEGORICAL = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
# viridis at 9 evenly spaced stops
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
           "#addc30", "#fde725")
MISSING = "#d0d0d0"
HIGHLIGHT = "#e4002b"
CANVAS = (900.0, 600.0)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def continuous_colour(t: float) -> str:
    """Viridis colour of ``t`` in [0, 1] (clipped), linear between the stops."""
    t = min(max(float(t), 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    rgb = _rgb(VIRIDIS[i]) * (1 - (t - i)) + _rgb(VIRIDIS[i + 1]) * (t - i)
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb)


def category_colour(code: int) -> str:
    return CATEGORICAL[int(code) % len(CATEGORICAL)]


def value_range(column: Column) -> tuple[float, float]:
    vals = column.values[np.isfinite(column.values)]
    if not len(vals):
        return 0.0, 1.0
    return float(vals.min()), float(vals.max())


def node_colours(view: GraphView, column: Column) -> list[str]:
    """A colour per node of ``view`` (majority category or mean value, see node_values)."""
    values = node_values(view, column)
    if column.categorical:
        return [MISSING if v is None else category_colour(int(v)) for v in values]
    lo, hi = value_range(column)
    span = hi - lo if hi > lo else 1.0
    return [MISSING if v is None else continuous_colour((v - lo) / span) for v in values]


@functools.lru_cache(maxsize=64)
def _layout(view: GraphView) -> dict[str, tuple[float, float]]:
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(view.node_ids)
    g.add_edges_from((a, b) for a, b, _ in view.result.edges)
    if not len(g):
        return {}
    pos = nx.spring_layout(g, seed=0, iterations=50)
    w, h = CANVAS
    return {k: (round(float(x) * w / 2, 1), round(float(y) * h / 2, 1)) for k, (x, y) in
            pos.items()}


def graph_elements(view: GraphView, column: Column, class_name: Any = str) -> list[dict]:
    """dash-cytoscape elements of ``view``: nodes (size, colour, preset position,
    tooltip text) and edges (shared points)."""
    colours = node_colours(view, column)
    values = node_values(view, column)
    pos = _layout(view)
    nodes = view.result.nodes
    biggest = max((n.size for n in nodes), default=1)
    out: list[dict] = []
    for node, colour, value in zip(nodes, colours, values, strict=True):
        top = node.majority_label
        shown = "-" if value is None else (
            column.categories[int(value)] if column.categorical and int(value) < len(
                column.categories) else f"{value:.3g}")
        tip = (f"{node.id}: {node.size} points; majority label "
               f"{'-' if top is None else class_name(top)}; {column.label}: {shown}")
        x, y = pos.get(node.id, (0.0, 0.0))
        out.append({
            "data": {"id": view.element_id(node.id), "size": node.size, "tip": tip,
                     "colour": colour, "px": round(14 + 30 * math.sqrt(node.size / biggest), 1)},
            "position": {"x": x, "y": y},
        })
    for a, b, w in view.result.edges:
        a, b = view.element_id(a), view.element_id(b)
        out.append({"data": {"id": f"{a}~{b}", "source": a, "target": b, "weight": int(w)}})
    return out


BASE_STYLE = [
    {"selector": "node", "style": {
        "background-color": "data(colour)", "width": "data(px)", "height": "data(px)",
        "border-width": 1, "border-color": "#555"}},
    {"selector": "edge", "style": {"line-color": "#9a9a9a", "width": 1.5}},
    {"selector": "node:selected", "style": {
        "border-width": 4, "border-color": "#111", "overlay-opacity": 0.15}},
]


def stylesheet(view: GraphView | None = None,
               linked: Mapping[str, float] | None = None) -> list[dict]:
    """The base style, plus (when ``linked`` maps node ids of ``view`` to shares) linked
    nodes ringed in red with the ring's width growing with the share of their members in
    the selection, and every other node faded."""
    if not linked or view is None:
        return list(BASE_STYLE)
    style = list(BASE_STYLE) + [{"selector": "node", "style": {"opacity": 0.25}}]
    by_width: dict[int, list[str]] = {}
    for node_id, share in linked.items():
        by_width.setdefault(2 + round(4 * share), []).append(node_id)
    for width, ids in sorted(by_width.items()):
        selector = ", ".join(f'node[id = "{view.element_id(i)}"]' for i in ids)
        style.append({"selector": selector, "style": {
            "opacity": 1, "border-width": width, "border-color": HIGHLIGHT}})
    return style


def legend_items(column: Column, present: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """``(colour, text)`` pairs: one per category present, or the range's two ends."""
    if column.categorical:
        codes = sorted(set(present)) if present is not None else range(len(column.categories))
        return [(category_colour(c), column.categories[c] if c < len(column.categories)
                 else str(c)) for c in codes]
    lo, hi = value_range(column)
    return [(continuous_colour(0.0), f"{lo:.3g}"), (continuous_colour(1.0), f"{hi:.3g}")]
