"""Plotly figures of the report, made from results data (plain dicts and arrays).

Every function takes already-computed numbers and returns a ``plotly.graph_objects.Figure``;
nothing here reads files or recomputes an analysis. :func:`render` turns a figure into an
HTML fragment without its own copy of plotly.js (the page embeds plotly.js once).

Strings that come from models, datasets or paths (layer names, class names, method labels)
are passed through :func:`esc` before they go into a figure: plotly draws text as a small
HTML dialect (``<b>``, ``<a href>``), so a raw ``<`` would be interpreted; escaped, it is
shown literally. Plotly's own JSON encoder writes ``<``, ``>`` and ``/`` as ``\\u`` escapes,
so no string can close the ``<script>`` element the figure lives in; :func:`render` checks it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)
DIM_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def esc(value: Any) -> str:
    """``value`` as text safe to put into a plotly label (shown literally, never as markup)."""
    return html.escape(str(value), quote=False)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _template() -> dict[str, Any]:
    axis = {"gridcolor": "#e6e6e6", "zerolinecolor": "#cccccc", "linecolor": "#999999",
            "ticks": "outside", "tickcolor": "#999999", "automargin": True,
            "title": {"standoff": 8}}
    return {
        "layout": {
            "font": {"family": FONT, "size": 12, "color": "#222222"},
            "paper_bgcolor": "white", "plot_bgcolor": "white",
            "colorway": list(PALETTE), "hovermode": "closest",
            "xaxis": axis, "yaxis": axis,
            "legend": {"bgcolor": "rgba(255,255,255,0.7)"},
        }
    }


def render(fig: Any, div_id: str, height: int | None = None) -> str:
    """HTML fragment (div + script) of ``fig`` without plotly.js (``full_html=False``,
    ``include_plotlyjs=False``); raises if the script could be ended early."""
    import plotly.io as pio

    height = int(height or fig.layout.height or 380)
    fig.update_layout(template=_template(), height=height)
    if fig.layout.margin.t is None:
        fig.update_layout(margin={"l": 60, "r": 20, "t": 40 if fig.layout.title.text else 20,
                                  "b": 50})
    out = pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=div_id,
        default_width="100%", default_height=f"{height}px",
        config={"responsive": True, "displaylogo": False,
                "toImageButtonOptions": {"filename": div_id}},
    )
    check_script_safe(out)
    return out


def check_script_safe(fragment: str) -> None:
    """Raise ``ValueError`` unless every ``<script>`` of ``fragment`` ends where it should:
    one closing tag per opening tag, and no ``<!--`` (which changes how ``</script>`` parses)."""
    low = fragment.lower()
    if low.count("<script") != low.count("</script") or "<!--" in low:
        raise ValueError("A figure's JSON would end its <script> element early; not embedded.")


def _finite(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def _go():
    import plotly.graph_objects as go

    return go


def _subplots(**kwargs: Any):
    from plotly.subplots import make_subplots

    return make_subplots(**kwargs)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def legend_top(fig: Any) -> Any:
    """Horizontal legend above the plot area (never over rotated tick labels)."""
    fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02,
                              "yanchor": "bottom"}, margin={"t": 40})
    return fig


MAX_TICK_LABELS = 18
"""Most category labels drawn on a layer axis: beyond it every k-th layer is labelled
(all remain in the hover), so 54 layer names do not collide in a half-width figure."""


def layer_ticks(names: Sequence[str], max_labels: int = MAX_TICK_LABELS) -> dict[str, Any]:
    """Axis settings for a categorical axis of (escaped) layer ``names``: every name when
    there are few, else every k-th one (first and last always), vertical and smaller."""
    names = list(names)
    n = len(names)
    if n <= max_labels:
        return {"type": "category"}
    k = math.ceil(n / max_labels)
    keep = list(range(0, n, k))
    if keep[-1] != n - 1:
        if n - 1 - keep[-1] < k / 2:
            keep[-1] = n - 1
        else:
            keep.append(n - 1)
    vals = [names[i] for i in keep]
    # vertical: labels one tick apart (>= 20 px in a half-width figure) never touch
    return {"type": "category", "tickmode": "array", "tickvals": vals, "ticktext": vals,
            "tickangle": -90, "tickfont": {"size": 10}}


def _none_to_nan(values: Sequence[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


# --------------------------------------------------------------------------------------
# generic
# --------------------------------------------------------------------------------------
def heatmap(
    matrix: Any, rows: Sequence[str], cols: Sequence[str], *, title: str = "",
    colorscale: str = "Viridis", zmin: float | None = None, zmax: float | None = None,
    colorbar: str = "", fmt: str = ".2f", row_title: str = "", col_title: str = "",
    marks: Sequence[tuple[int, int]] = (), reverse: bool = False,
) -> Any:
    """A labelled matrix with its values written in the cells (when small enough).

    ``marks``: (row, column) cells outlined (e.g. the nearest layer of each row)."""
    go = _go()
    z = np.asarray(matrix, dtype=np.float64)
    rows_e, cols_e = [esc(r) for r in rows], [esc(c) for c in cols]
    show_text = z.size <= 400
    text = [[("" if not np.isfinite(v) else format(v, fmt)) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=cols_e, y=rows_e, colorscale=colorscale, zmin=zmin, zmax=zmax,
        reversescale=reverse, colorbar={"title": {"text": esc(colorbar)}, "thickness": 12},
        text=text if show_text else None, texttemplate="%{text}" if show_text else None,
        hovertemplate="%{y} / %{x}: %{z:" + fmt + "}<extra></extra>",
        xgap=1, ygap=1,
    ))
    fig.update_layout(shapes=mark_shapes(marks))
    fig.update_layout(title={"text": esc(title)} if title else None)
    fig.update_xaxes(title_text=esc(col_title), showgrid=False,
                     **{"tickangle": -30, **layer_ticks(cols_e)})
    yticks = layer_ticks(rows_e)
    yticks.pop("tickangle", None)
    fig.update_yaxes(title_text=esc(row_title), autorange="reversed", showgrid=False,
                     **yticks)
    return fig


def mark_shapes(marks: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Outlines of (row, column) cells of a categorical heatmap."""
    return [{"type": "rect", "xref": "x", "yref": "y", "x0": c - 0.5, "x1": c + 0.5,
             "y0": r - 0.5, "y1": r + 0.5, "line": {"color": "#111111", "width": 2.5}}
            for r, c in marks]


def heatmap_selector(
    matrices: Mapping[str, Any], rows: Sequence[str], cols: Sequence[str], *,
    marks_by_key: Mapping[str, Sequence[tuple[int, int]]] | None = None, **kwargs: Any
) -> Any:
    """:func:`heatmap` of the first matrix with a drop-down switching between all of them
    (each key is the menu label); ``marks_by_key`` outlines cells per matrix."""
    keys = list(matrices)
    marks_by_key = marks_by_key or {}
    fig = heatmap(matrices[keys[0]], rows, cols, marks=marks_by_key.get(keys[0], ()),
                  **kwargs)
    if len(keys) > 1:
        fmt = kwargs.get("fmt", ".2f")
        buttons = []
        for key in keys:
            z = np.asarray(matrices[key], dtype=np.float64)
            text = [[("" if not np.isfinite(v) else format(v, fmt)) for v in row] for row in z]
            buttons.append({"label": esc(key), "method": "update",
                            "args": [{"z": [z.tolist()], "text": [text]},
                                     {"shapes": mark_shapes(marks_by_key.get(key, ()))}]})
        fig.update_layout(updatemenus=[{
            "buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left",
            "y": 1.02, "yanchor": "bottom", "showactive": True, "pad": {"t": 0, "b": 0},
        }], margin={"t": 60})
    return fig


def lines_by_layer(
    layers: Sequence[str], series: Mapping[str, Sequence[float | None]], *, ytitle: str = "",
    title: str = "", yrange: Sequence[float] | None = None, dashed: Sequence[str] = (),
    band: tuple[float, float, str] | None = None, log_y: bool = False,
) -> Any:
    """One line per series over the layers in depth order."""
    go = _go()
    x = [esc(n) for n in layers]
    fig = go.Figure()
    if band is not None:
        lo, hi, label = band
        fig.add_hrect(y0=lo, y1=hi, fillcolor="#2ca02c", opacity=0.08, line_width=0,
                      annotation_text=esc(label), annotation_position="top left")
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Scatter(
            x=x, y=_none_to_nan(values), mode="lines+markers", name=esc(name),
            line={"color": color(i), "dash": "dash" if name in dashed else "solid"},
            connectgaps=False,
        ))
    fig.update_layout(title={"text": esc(title)} if title else None)
    legend_top(fig)
    fig.update_xaxes(title_text="layer (input → output)", **layer_ticks(x))
    fig.update_yaxes(title_text=esc(ytitle), range=yrange, type="log" if log_y else None,
                     exponentformat="power")
    return fig


def image_grid(
    images: Sequence[np.ndarray], *, titles: Sequence[str] = (), cols: int = 6,
    colorscale: str = "Greys", reverse: bool = True, cell: int = 120,
    row_titles: Sequence[str] = (), column_titles: Sequence[str] = (),
    symmetric: bool = False,
) -> Any:
    """Small heatmaps in a grid (images, attribution maps); each scaled to its own range."""
    go = _go()
    n = len(images)
    rows = math.ceil(n / cols) if n else 1
    kwargs: dict[str, Any] = {"horizontal_spacing": 0.012, "vertical_spacing": 0.04}
    if titles:
        kwargs["subplot_titles"] = [esc(t) for t in titles]
    if column_titles:
        kwargs["column_titles"] = [esc(t) for t in column_titles]
    if row_titles:
        kwargs["row_titles"] = [esc(t) for t in row_titles]
    fig = _subplots(rows=rows, cols=cols, **kwargs)
    for i, img in enumerate(images):
        a = np.asarray(img, dtype=np.float64)
        vmax = float(np.nanmax(np.abs(a))) if a.size else 1.0
        zmin, zmax = (-vmax, vmax) if symmetric else (float(np.nanmin(a)), float(np.nanmax(a)))
        fig.add_trace(go.Heatmap(
            z=a, colorscale=colorscale, reversescale=reverse, showscale=False,
            zmin=zmin, zmax=zmax if zmax > zmin else zmin + 1e-12,
            hovertemplate="(%{x}, %{y}): %{z:.3g}<extra></extra>",
        ), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(n):  # square pixels: each y axis follows its own x axis
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=i // cols + 1,
                         col=i % cols + 1)
    for ann in fig.layout.annotations:
        ann.font = {"size": 11}
    fig.update_layout(height=max(160, rows * cell + 60),
                      margin={"l": 30 if row_titles else 10, "r": 30 if row_titles else 10,
                              "t": 40, "b": 10})
    return fig


# --------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------
def capture_activity(layers: Sequence[Mapping[str, Any]]) -> Any:
    """Per layer: share of zero activations, of dead units and of saturated units."""
    go = _go()
    x = [esc(r["layer"]) for r in layers]
    units = [max(int(r.get("n_units") or 0), 1) for r in layers]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=[r["fraction_zero"] for r in layers], name="zero activations",
                         marker_color=color(0)))
    fig.add_trace(go.Bar(x=x, y=[len(r["dead_units"]) / u for r, u in zip(layers, units,
                                                                            strict=True)],
                         name="dead units", marker_color=color(3)))
    fig.add_trace(go.Bar(x=x, y=[len(r["saturated_units"]) / u for r, u in zip(layers, units,
                                                                                 strict=True)],
                         name="saturated units", marker_color=color(1)))
    fig.update_layout(barmode="group")
    legend_top(fig)
    fig.update_xaxes(title_text="layer (input → output)", **layer_ticks(x))
    # two significant digits ("0.12%", "50%"): ".0%" printed every tick of small
    # fractions as "0%"
    fig.update_yaxes(title_text="fraction", rangemode="tozero", tickformat=".2~p")
    return fig


def capture_unit_spread(layers: Sequence[Mapping[str, Any]]) -> Any:
    """Box plot per layer of the per-unit standard deviations (log scale)."""
    go = _go()
    fig = go.Figure()
    for i, r in enumerate(layers):
        std = _finite(r.get("unit_std") or [])
        std = std[std > 0]
        fig.add_trace(go.Box(y=std, name=esc(r["layer"]), marker_color=color(i),
                             boxpoints="outliers", showlegend=False))
    fig.update_xaxes(title_text="layer (input → output)",
                     **layer_ticks([esc(r["layer"]) for r in layers]))
    fig.update_yaxes(title_text="std of a unit across samples", type="log",
                     exponentformat="power")
    return fig


# --------------------------------------------------------------------------------------
# topology
# --------------------------------------------------------------------------------------
def persistence_diagrams(diagrams: Mapping[str, Mapping[int, np.ndarray]],
                         max_cols: int = 4) -> Any:
    """Birth/death scatter per layer (small multiples); H0 blue, H1 red; features that
    never die are drawn as triangles on the top edge."""
    go = _go()
    names = list(diagrams)
    rows, cols = grid_shape(len(names), max_cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[esc(n) for n in names],
                    horizontal_spacing=0.06, vertical_spacing=0.12)
    shown: set[int] = set()
    for i, name in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        dgms = {int(d): np.asarray(v, dtype=np.float64).reshape(-1, 2)
                for d, v in diagrams[name].items()}
        finite_vals = np.concatenate([d[np.isfinite(d)].ravel() for d in dgms.values()]
                                     or [np.zeros(1)])
        top = float(finite_vals.max()) if finite_vals.size else 1.0
        top = top if top > 0 else 1.0
        inf_y = top * 1.08
        fig.add_trace(go.Scatter(x=[0, inf_y], y=[0, inf_y], mode="lines", showlegend=False,
                                 line={"color": "#999999", "width": 1}, hoverinfo="skip"),
                      row=r, col=c)
        for d, dgm in sorted(dgms.items()):
            fin = dgm[np.isfinite(dgm[:, 1])]
            ess = dgm[~np.isfinite(dgm[:, 1])]
            col = DIM_COLORS[d % len(DIM_COLORS)]
            fig.add_trace(go.Scatter(
                x=fin[:, 0], y=fin[:, 1], mode="markers", name=f"H{d}", legendgroup=f"H{d}",
                showlegend=d not in shown, marker={"color": col, "size": 5, "opacity": 0.7},
                hovertemplate=f"H{d} birth %{{x:.3f}} death %{{y:.3f}}<extra></extra>",
            ), row=r, col=c)
            shown.add(d)
            if len(ess):
                fig.add_trace(go.Scatter(
                    x=ess[:, 0], y=np.full(len(ess), inf_y), mode="markers",
                    name=f"H{d} (never dies)", legendgroup=f"H{d}", showlegend=False,
                    marker={"color": col, "size": 8, "symbol": "triangle-up"},
                    hovertemplate=f"H{d} birth %{{x:.3f}}, never dies<extra></extra>",
                ), row=r, col=c)
        fig.update_xaxes(range=[0, inf_y * 1.02], row=r, col=c)
        fig.update_yaxes(range=[0, inf_y * 1.04], row=r, col=c)
    fig.update_xaxes(title_text="birth")
    fig.update_yaxes(title_text="death")
    fig.update_layout(height=290 * rows + 60, margin={"t": 40, "b": 50})
    return fig


def barcodes(diagrams: Mapping[str, Mapping[int, np.ndarray]], dim: int = 1,
             max_bars: int = 40, max_cols: int = 4) -> Any:
    """Barcode per layer for one homology dimension: the ``max_bars`` longest bars, longest
    on top; bars that never die run to the right edge."""
    go = _go()
    names = list(diagrams)
    rows, cols = grid_shape(len(names), max_cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[esc(n) for n in names],
                    horizontal_spacing=0.05, vertical_spacing=0.12)
    col = DIM_COLORS[dim % len(DIM_COLORS)]
    for i, name in enumerate(names):
        r, c = i // cols + 1, i % cols + 1
        dgm = np.asarray(diagrams[name].get(dim, np.zeros((0, 2))),
                         dtype=np.float64).reshape(-1, 2)
        fin_all = _finite(dgm)
        right = float(fin_all.max()) * 1.05 if fin_all.size else 1.0
        death = np.where(np.isfinite(dgm[:, 1]), dgm[:, 1], right)
        life = death - dgm[:, 0]
        longest = np.argsort(-life, kind="stable")[:max_bars]
        order = longest[np.lexsort((-life[longest], dgm[longest, 0]))]  # by birth
        xs: list[float | None] = []
        ys: list[float | None] = []
        for k, j in enumerate(order):
            xs += [float(dgm[j, 0]), float(death[j]), None]
            ys += [k, k, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": col, "width": 3},
                                 showlegend=False, hoverinfo="skip"), row=r, col=c)
        fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False,
                         ticks="", row=r, col=c)
    fig.update_xaxes(title_text="filtration value")
    fig.update_layout(height=260 * rows + 50, margin={"t": 40, "b": 50})
    return fig


def betti_curves(curves: Mapping[str, Mapping[int, tuple[Sequence[float], Sequence[int]]]]
                 ) -> Any:
    """Betti number against filtration value, one panel per homology dimension, one line
    per layer (``curves[layer][dim] = (grid, betti)``)."""
    go = _go()
    names = list(curves)
    dims = sorted({d for v in curves.values() for d in v})
    fig = _subplots(rows=1, cols=max(1, len(dims)),
                    subplot_titles=[f"H{d}" for d in dims], horizontal_spacing=0.08)
    for i, name in enumerate(names):
        for j, d in enumerate(dims):
            if d not in curves[name]:
                continue
            grid, betti = curves[name][d]
            fig.add_trace(go.Scatter(
                x=list(grid), y=list(betti), mode="lines", name=esc(name), legendgroup=str(i),
                showlegend=j == 0, line={"color": color(i), "shape": "hv"},
            ), row=1, col=j + 1)
    fig.update_xaxes(title_text="filtration value")
    fig.update_yaxes(title_text="Betti number", rangemode="tozero")
    fig.update_layout(legend={"orientation": "v", "x": 1.01, "y": 1})
    return fig


def sensitivity_curves(sens: Mapping[str, Mapping[str, Any]], dim: int = 1) -> Any:
    """Distance between a layer's diagram and the diagram with its top-k principal
    components removed, against k (one line per layer)."""
    go = _go()
    fig = go.Figure()
    for i, (name, s) in enumerate(sens.items()):
        dist = s.get("distances", {}).get(str(dim)) or s.get("distances", {}).get(dim)
        if dist is None:
            continue
        fig.add_trace(go.Scatter(x=list(s["k_values"]), y=list(dist), mode="lines+markers",
                                 name=esc(name), line={"color": color(i)}))
    fig.update_xaxes(title_text="top principal components removed (k)")
    fig.update_yaxes(title_text=f"H{dim} distance to k = 0", rangemode="tozero")
    legend_top(fig)
    return fig


# --------------------------------------------------------------------------------------
# mapper
# --------------------------------------------------------------------------------------
def class_purity_heatmap(layers: Sequence[str], classes: Sequence[str],
                         values: Sequence[Sequence[float | None]]) -> Any:
    z = np.asarray([_none_to_nan(row) for row in values], dtype=np.float64)
    fig = heatmap(z, layers, classes, colorscale="Viridis", zmin=0, zmax=1, colorbar="purity",
                  row_title="layer", col_title="class")
    return fig


# --------------------------------------------------------------------------------------
# spectral
# --------------------------------------------------------------------------------------
def singular_value_spectra(spectra: Mapping[str, np.ndarray],
                           random: Mapping[str, np.ndarray] | None = None) -> Any:
    """Singular values in decreasing order, one line per layer (log scale); the random-init
    copy of the same layer dashed."""
    go = _go()
    fig = go.Figure()
    for i, (name, sv) in enumerate(spectra.items()):
        sv = np.asarray(sv, dtype=np.float64)
        x = np.arange(1, len(sv) + 1)
        fig.add_trace(go.Scatter(x=x, y=sv, mode="lines", name=esc(name), legendgroup=str(i),
                                 line={"color": color(i), "width": 2}))
        if random and name in random:
            rv = np.asarray(random[name], dtype=np.float64)
            fig.add_trace(go.Scatter(
                x=np.arange(1, len(rv) + 1), y=rv, mode="lines", legendgroup=str(i),
                name=esc(f"{name} (random init)"), showlegend=False,
                line={"color": color(i), "width": 1, "dash": "dot"},
            ))
    fig.update_xaxes(title_text="index (largest first)", type="log")
    fig.update_yaxes(title_text="singular value", type="log")
    fig.update_layout(legend={"font": {"size": 10}})
    return fig


def esd_panels(layers: Sequence[Mapping[str, Any]], max_cols: int = 3) -> Any:
    """Histogram of each layer's eigenvalues of W Wᵀ/n on log-spaced bins (density), the
    fitted Marchenko-Pastur density (orange) and the power-law tail fit from x_min (red,
    dashed); the MP bulk edge λ+ as a dotted vertical line. One panel per layer: for many
    layers use :func:`esd_picker`."""
    rows, cols = grid_shape(len(layers), max_cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[esc(r["layer"]) for r in layers],
                    horizontal_spacing=0.07, vertical_spacing=0.14)
    legend_done = False
    for i, lay in enumerate(layers):
        r, c = i // cols + 1, i % cols + 1
        traces, notes = _esd_traces(lay, show_legend=not legend_done)
        if not traces:
            continue
        for t in traces:
            fig.add_trace(t, row=r, col=c)
        if notes["lambda_plus"] is not None:
            fig.add_vline(x=notes["lambda_plus"], line={"color": "#ff7f0e", "dash": "dot",
                                                        "width": 1}, row=r, col=c)
        if notes["alpha"] is not None:
            fig.add_annotation(text=notes["alpha"], x=1, y=1, xref="x domain", yref="y domain",
                               xanchor="right", yanchor="top", showarrow=False,
                               font={"size": 11, "color": "#d62728"}, row=r, col=c)
        legend_done = legend_done or notes["lambda_plus"] is not None
        fig.update_xaxes(type="log", nticks=4, tickangle=0, exponentformat="power",
                         row=r, col=c)
        fig.update_yaxes(type="log", nticks=4, exponentformat="power", row=r, col=c)
    fig.update_xaxes(title_text="eigenvalue λ of W Wᵀ / n (normalised)")
    fig.update_yaxes(title_text="density")
    fig.update_layout(height=240 * rows + 80, bargap=0,
                      legend={"orientation": "h", "y": -0.08 if rows > 2 else -0.2, "x": 0},
                      margin={"t": 40, "b": 60})
    return fig


def _esd_traces(lay: Mapping[str, Any], show_legend: bool) -> tuple[list[Any], dict]:
    """The ESD bars, MP density and power-law tail of one layer, and its annotations
    (``{"alpha": text or None, "lambda_plus": edge or None}``)."""
    go = _go()
    from deepprofile.spectral.rmt import mp_pdf  # the spectral helper's MP law

    eig = _finite(lay.get("eigenvalues") or [])
    eig = eig[eig > 0]
    traces: list[Any] = []
    notes: dict[str, Any] = {"alpha": None, "lambda_plus": None}
    if eig.size == 0:
        return traces, notes
    lo, hi = float(eig.min()), float(eig.max())
    if hi <= lo:
        hi = lo * 1.01 + 1e-12
    edges = np.geomspace(lo * 0.98, hi * 1.02, max(8, min(40, eig.size // 2)))
    counts, _ = np.histogram(eig, bins=edges)
    dens = counts / (eig.size * np.diff(edges))
    mids = np.sqrt(edges[:-1] * edges[1:])
    traces.append(go.Bar(x=mids, y=dens, width=np.diff(edges), name="ESD", legendgroup="esd",
                         showlegend=show_legend,
                         marker={"color": "#9ecae1", "line": {"width": 0}},
                         hovertemplate="λ≈%{x:.3g}: density %{y:.3g}<extra></extra>"))
    mp = lay.get("mp")
    if mp:
        xs = np.geomspace(max(lo * 0.98, 1e-12), hi * 1.02, 120)
        ys = mp_pdf(xs, mp["q"], mp["sigma2"])
        traces.append(go.Scatter(x=xs, y=np.where(ys > 0, ys, np.nan), mode="lines",
                                 name="Marchenko-Pastur fit", legendgroup="mp",
                                 showlegend=show_legend, line={"color": "#ff7f0e", "width": 2}))
        notes["lambda_plus"] = float(mp["lambda_plus"])
    pl = lay.get("power_law")
    if pl and pl.get("alpha") and pl.get("xmin"):
        a, xmin = float(pl["alpha"]), float(pl["xmin"])
        frac = eig[eig >= xmin].size / eig.size
        xs = np.geomspace(xmin, hi * 1.02, 50)
        traces.append(go.Scatter(x=xs, y=frac * (a - 1) / xmin * (xs / xmin) ** (-a),
                                 mode="lines", name="power-law tail fit", legendgroup="pl",
                                 showlegend=show_legend,
                                 line={"color": "#d62728", "width": 2, "dash": "dash"}))
        notes["alpha"] = f"α={a:.2f}"
    return traces, notes


def esd_picker(layers: Sequence[Mapping[str, Any]]) -> Any:
    """:func:`esd_panels` for many layers: one panel and a drop-down over *every* layer
    (its ESD, MP fit and edge, power-law tail), so no layer is left out of the page."""
    go = _go()
    fig = go.Figure()
    groups: list[tuple[int, int]] = []
    notes = []
    for i, lay in enumerate(layers):
        traces, note = _esd_traces(lay, show_legend=True)
        start = len(fig.data)
        for t in traces:
            t.visible = i == 0
            fig.add_trace(t)
        groups.append((start, len(fig.data)))
        notes.append(note)

    def decorations(i: int) -> tuple[list[dict], list[dict]]:
        note = notes[i]
        shapes = [] if note["lambda_plus"] is None else [{
            "type": "line", "xref": "x", "yref": "paper", "x0": note["lambda_plus"],
            "x1": note["lambda_plus"], "y0": 0, "y1": 1,
            "line": {"color": "#ff7f0e", "dash": "dot", "width": 1}}]
        anns = [] if note["alpha"] is None else [{
            "text": note["alpha"], "x": 1, "y": 1, "xref": "paper", "yref": "paper",
            "xanchor": "right", "yanchor": "top", "showarrow": False,
            "font": {"size": 12, "color": "#d62728"}}]
        return shapes, anns

    buttons = []
    for i, lay in enumerate(layers):
        visible = [False] * len(fig.data)
        for j in range(*groups[i]):
            visible[j] = True
        shapes, anns = decorations(i)
        buttons.append({"label": esc(lay["layer"]), "method": "update",
                        "args": [{"visible": visible},
                                 {"shapes": shapes, "annotations": anns,
                                  "xaxis.autorange": True, "yaxis.autorange": True}]})
    shapes, anns = decorations(0) if layers else ([], [])
    fig.update_layout(
        shapes=shapes, annotations=anns, bargap=0,
        **_picker_layout(buttons))
    fig.update_xaxes(type="log", exponentformat="power", title_text="eigenvalue λ")
    fig.update_yaxes(type="log", exponentformat="power", title_text="density")
    return fig



def _picker_layout(buttons: list[dict[str, Any]]) -> dict[str, Any]:
    """Layout of a figure with a layer drop-down at its top left and the legend top right."""
    return {
        "updatemenus": [{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left",
                         "y": 1.02, "yanchor": "bottom", "showactive": True,
                         "pad": {"t": 0, "b": 0}}],
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02,
                   "yanchor": "bottom"},
        "margin": {"t": 60},
    }

def _sv(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def singular_value_summary(names: Sequence[str], spectra: Mapping[str, Any],
                           random: Mapping[str, Any] | None = None) -> Any:
    """By depth: the largest, median and smallest singular value of each layer (trained:
    solid; random init: dashed), one line each, on a log axis."""
    random = random or {}
    series: dict[str, list[float | None]] = {}
    for label, pick in (("largest", np.max), ("median", np.median), ("smallest", np.min)):
        series[f"{label} (trained)"] = [float(pick(_sv(spectra[n]))) if n in spectra
                                        and _sv(spectra[n]).size else None for n in names]
        if random:
            series[f"{label} (random init)"] = [
                float(pick(_sv(random[n]))) if n in random and _sv(random[n]).size else None
                for n in names]
    fig = lines_by_layer(names, series, ytitle="singular value", log_y=True,
                         dashed=[k for k in series if "random" in k])
    for trace in fig.data:  # same colour for trained and random of one statistic
        base = trace.name.split(" (")[0]
        trace.line.color = color(["largest", "median", "smallest"].index(base))
    return fig


def singular_value_picker(spectra: Mapping[str, Any],
                          random: Mapping[str, Any] | None = None) -> Any:
    """One layer's singular values in decreasing order (log-log), trained and (dotted)
    random init, with a drop-down over every layer."""
    go = _go()
    random = random or {}
    fig = go.Figure()
    groups = []
    for i, (name, sv) in enumerate(spectra.items()):
        start = len(fig.data)
        sv = _sv(sv)
        fig.add_trace(go.Scatter(x=np.arange(1, len(sv) + 1), y=sv, mode="lines",
                                 name="trained", visible=i == 0,
                                 line={"color": color(0), "width": 2}))
        if name in random:
            rv = _sv(random[name])
            fig.add_trace(go.Scatter(x=np.arange(1, len(rv) + 1), y=rv, mode="lines",
                                     name="random init", visible=i == 0,
                                     line={"color": color(1), "width": 1.5, "dash": "dot"}))
        groups.append((name, start, len(fig.data)))
    buttons = []
    for name, start, end in groups:
        visible = [start <= j < end for j in range(len(fig.data))]
        buttons.append({"label": esc(name), "method": "update",
                        "args": [{"visible": visible},
                                 {"xaxis.autorange": True, "yaxis.autorange": True}]})
    fig.update_layout(
        **_picker_layout(buttons))
    fig.update_xaxes(title_text="index (largest first)", type="log")
    fig.update_yaxes(title_text="singular value", type="log", exponentformat="power")
    return fig


def hypergraph_drawing(hg: Mapping[str, Any]) -> Any:
    """Class hypergraph as a two-row drawing: classes (hyperedges) on top, the layer's
    influential singular vectors (vertices) below, a line for each membership; vertices
    shared by many classes are darker and larger."""
    go = _go()
    classes = list(hg["classes"])
    edges = {k: list(v) for k, v in hg["edges"].items()}
    degree = {int(k): int(v) for k, v in hg.get("vertex_degree", {}).items()}
    used = sorted({v for members in edges.values() for v in members})
    fig = go.Figure()
    if not used:
        fig.add_annotation(text="no influential singular vectors", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        return fig
    cx = np.linspace(0, 1, len(classes)) if len(classes) > 1 else np.array([0.5])
    vx = np.linspace(0, 1, len(used)) if len(used) > 1 else np.array([0.5])
    vpos = {v: vx[i] for i, v in enumerate(used)}
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, name in enumerate(classes):
        for v in edges.get(name, []):
            xs += [float(cx[i]), float(vpos[v]), None]
            ys += [1.0, 0.0, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                             line={"color": "rgba(90,90,90,0.25)", "width": 1}))
    sizes = {name: len(edges.get(name, [])) for name in classes}
    fig.add_trace(go.Scatter(
        x=cx, y=np.ones(len(classes)), mode="markers+text", text=[esc(c) for c in classes],
        textposition="top center", showlegend=False,
        marker={"symbol": "square", "size": 14, "color": color(0)},
        customdata=[sizes[c] for c in classes],
        hovertemplate="class %{text}: %{customdata} influential vectors<extra></extra>",
    ))
    deg = np.asarray([degree.get(v, 0) for v in used], dtype=np.float64)
    fig.add_trace(go.Scatter(
        x=vx, y=np.zeros(len(used)), mode="markers", showlegend=False,
        marker={"size": 6 + 10 * deg / max(deg.max(), 1), "color": deg, "colorscale": "Reds",
                "cmin": 0, "cmax": max(len(classes), 1), "line": {"width": 0.5,
                                                                   "color": "#555"},
                "colorbar": {"title": {"text": "classes"}, "thickness": 10, "len": 0.6}},
        text=[f"u{v}" for v in used], customdata=deg,
        hovertemplate="singular vector %{text}: in %{customdata} classes<extra></extra>",
    ))
    fig.update_xaxes(visible=False, range=[-0.05, 1.05])
    fig.update_yaxes(visible=False, range=[-0.2, 1.3])
    fig.add_annotation(text="classes", x=-0.04, y=1, showarrow=False, xanchor="right",
                       textangle=-90, font={"size": 11})
    fig.add_annotation(text="singular vectors", x=-0.04, y=0, showarrow=False, xanchor="right",
                       textangle=-90, font={"size": 11})
    fig.update_layout(margin={"l": 30, "r": 10, "t": 20, "b": 10})
    return fig


# --------------------------------------------------------------------------------------
# attribution
# --------------------------------------------------------------------------------------
def noisy_accuracy(rows: Sequence[Mapping[str, Any]]) -> Any:
    go = _go()
    fig = go.Figure(go.Scatter(
        x=[r["sigma"] for r in rows], y=[r["accuracy_mean"] for r in rows],
        error_y={"type": "data", "array": [r.get("accuracy_std") or 0 for r in rows]},
        mode="lines+markers", line={"color": color(0)}, name="accuracy",
    ))
    fig.update_xaxes(title_text="diffusion σ of the residual noise")
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%")
    return fig


def alignment_strip(alignment: Mapping[str, Mapping[str, Any]]) -> Any:
    """Per method: alignment of each image's map with the local data manifold (dots), its
    mean (bar) and the same measure for random directions (grey diamonds)."""
    go = _go()
    names = list(alignment)
    x = [esc(n) for n in names]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=[alignment[n].get("mean") for n in names], name="mean",
                         marker_color="rgba(31,119,180,0.35)"))
    px: list[str] = []
    py: list[float] = []
    for n, xe in zip(names, x, strict=True):
        vals = _finite(alignment[n].get("alignments") or [])
        px += [xe] * len(vals)
        py += vals.tolist()
    fig.add_trace(go.Scatter(x=px, y=py, mode="markers", name="per image",
                             marker={"color": color(0), "size": 5}))
    fig.add_trace(go.Scatter(x=x, y=[alignment[n].get("random_mean") for n in names],
                             mode="markers", name="random direction",
                             marker={"color": "#555", "symbol": "diamond", "size": 9}))
    fig.update_xaxes(type="category", tickangle=-30)
    fig.update_yaxes(title_text="alignment (cos to tangent space)", rangemode="tozero")
    fig.update_layout(bargap=0.4)
    legend_top(fig)
    return fig


# --------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------
def paired_bars(labels: Sequence[str], a: Sequence[float | None], b: Sequence[float | None],
                names: tuple[str, str] = ("A", "B"), ytitle: str = "",
                log_y: bool = False) -> Any:
    go = _go()
    x = [esc(v) for v in labels]
    fig = go.Figure([
        go.Bar(x=x, y=_none_to_nan(a), name=esc(names[0]), marker_color=color(0)),
        go.Bar(x=x, y=_none_to_nan(b), name=esc(names[1]), marker_color=color(1)),
    ])
    fig.update_layout(barmode="group")
    legend_top(fig)
    fig.update_xaxes(**{"tickangle": -30, **layer_ticks(x)})
    fig.update_yaxes(title_text=esc(ytitle), type="log" if log_y else None)
    return fig


def angle_bars(labels: Sequence[str], mean: Sequence[float], lo: Sequence[float],
               hi: Sequence[float], random: Sequence[float]) -> Any:
    """Mean principal angle (bar, with min-max range) per layer and the mean angle of
    random subspaces of the same size (grey diamonds)."""
    go = _go()
    x = [esc(v) for v in labels]
    m = np.asarray(mean, dtype=np.float64)
    fig = go.Figure([
        go.Bar(x=x, y=m, name="mean principal angle", marker_color=color(0),
               error_y={"type": "data", "symmetric": False,
                        "array": np.asarray(hi) - m, "arrayminus": m - np.asarray(lo)}),
        go.Scatter(x=x, y=list(random), mode="markers", name="random subspaces",
                   marker={"color": "#555", "symbol": "diamond", "size": 10}),
    ])
    fig.update_xaxes(**{"tickangle": -30, **layer_ticks(x)})
    fig.update_yaxes(title_text="angle (degrees)", range=[0, 92])
    legend_top(fig)
    return fig
