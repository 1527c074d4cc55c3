"""The explorer's callbacks: select, cache and format; the computing is the package's.

Every callback catches what goes wrong and answers with a message in the page (the
browser never sees a traceback): deepprofile's own errors as they are, anything else as
its type and message (and the traceback on the server's stderr).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from deepprofile.errors import DeepProfileError
from deepprofile.explore.data import GraphView, MapperParams, RunData, linked_nodes, node_values
from deepprofile.explore.elements import (
    category_colour,
    graph_elements,
    legend_items,
    stylesheet,
)

MAX_THUMBNAILS = 48
MAX_TABLE_ROWS = 60


def explain(exc: BaseException) -> str:
    """One line for the page: deepprofile's errors verbatim, others with their type."""
    if isinstance(exc, DeepProfileError):
        return str(exc)
    print("".join(traceback.format_exception(exc)), file=sys.stderr)
    return f"Internal error ({type(exc).__name__}: {exc}); details on the server's console."


def _view(runs: dict[str, RunData], data: Any) -> GraphView | None:
    if not data:
        return None
    return runs[data["run"]].graph(data["layer"], MapperParams(**data["params"]))


def register_callbacks(app: Any, runs: dict[str, RunData],
                       startup_notes: Sequence[str] = ()) -> None:
    """Wire the layout of :func:`deepprofile.explore.app.build_layout` to ``runs``."""
    from dash import Input, Output, State, ctx, html, no_update

    @app.callback(
        Output("layer-a", "value"), Output("layer-b", "value"), Output("msg-url", "children"),
        Input("url", "search"), State("layer-a", "value"), State("layer-b", "value"),
    )
    def from_url(search: str | None, layer_a: str, layer_b: str):
        notes = list(startup_notes)
        query = parse_qs((search or "").lstrip("?"))
        chosen = {"a": layer_a, "b": layer_b}
        for key, arg in (("a", "layer"), ("b", "layer_b")):
            if arg in query:
                try:
                    chosen[key] = runs[key].check_layer(query[arg][0])
                except Exception as exc:
                    notes.append(explain(exc))
        same = {"a": layer_a, "b": layer_b}
        return (*(no_update if chosen[k] == same[k] else chosen[k] for k in ("a", "b")),
                " ".join(notes))

    def draw(key: str) -> Callable:
        def callback(layer, lens, intervals, overlap, eps, min_samples, subsample, colour):
            run = runs[key]
            try:
                params = MapperParams.from_ui(lens, intervals, overlap, eps, min_samples,
                                              subsample)
                cached = run.cached(layer, params) if layer in run.layers else False
                view = run.graph(layer, params)
                column = run.columns()[colour]
                elements = graph_elements(view, column, run.class_name)
            except Exception as exc:
                return no_update, no_update, explain(exc), no_update, no_update
            s = view.result.stats
            caption = (f"{layer}: {s.n_nodes} nodes, {s.n_edges} edges, {s.n_components} "
                       f"components, {s.n_points} points ({100 * s.uncovered_fraction:.0f}% in "
                       f"no node); {'cached' if cached else f'built in {view.seconds:.2f} s'}")
            msg = "" if s.n_nodes else (
                "This graph has no nodes: raise eps, lower min_samples or intervals.")
            data = {"run": key, "layer": layer, "params": asdict(params)}
            return elements, caption, msg, data, legend(view, column)

        return callback

    def legend(view: GraphView, column: Any) -> Any:
        present = None
        if column.categorical:
            present = [int(v) for v in node_values(view, column) if v is not None]
        items = [html.Span([html.Span(style={
            "display": "inline-block", "width": "10px", "height": "10px", "background": colour,
            "marginRight": "3px"}), text], style={"marginRight": "8px"})
            for colour, text in legend_items(column, present)]
        sep = " .. " if not column.categorical else ""
        return [html.Span(f"{column.label}: ", style={"color": "#555"}), *(
            [items[0], sep, items[1]] if sep and len(items) == 2 else items)]

    for key in ("a", "b"):
        app.callback(
            Output(f"graph-{key}", "elements"), Output(f"caption-{key}", "children"),
            Output(f"msg-{key}", "children"), Output(f"view-{key}", "data"),
            Output(f"legend-{key}", "children"),
            Input(f"layer-{key}", "value"), Input("lens", "value"), Input("intervals", "value"),
            Input("overlap", "value"), Input("eps", "value"), Input("min-samples", "value"),
            Input("subsample", "value"), Input("colour", "value"),
        )(draw(key))

    @app.callback(
        Output("details", "children"), Output("graph-a", "stylesheet"),
        Output("graph-b", "stylesheet"), Output("linked-a", "children"),
        Output("linked-b", "children"), Output("selection", "data"),
        Output("msg-details", "children"),
        Input("graph-a", "selectedNodeData"), Input("graph-b", "selectedNodeData"),
        Input("view-a", "data"), Input("view-b", "data"), State("selection", "data"),
        prevent_initial_call=True,
    )
    def select(sel_a, sel_b, data_a, data_b, last):
        try:
            return _select(runs, ctx.triggered_id, sel_a, sel_b, data_a, data_b, last)
        except Exception as exc:
            return (no_update,) * 6 + (explain(exc),)

    for key in ("a", "b"):
        app.clientside_callback(  # hover text without a round trip to the server
            "function(d) { return d && d.tip ? d.tip : ''; }",
            Output(f"hover-{key}", "children"), Input(f"graph-{key}", "mouseoverNodeData"),
        )

    # Cytoscape caches where its canvas sits on the page; when text above a graph changes
    # height the cache is stale and clicks land beside the nodes. Tell it to re-measure.
    app.clientside_callback(
        """function() {
            setTimeout(function() {
                ['graph-a', 'graph-b'].forEach(function(id) {
                    var el = document.getElementById(id);
                    if (el && el._cyreg && el._cyreg.cy) { el._cyreg.cy.resize(); }
                });
            }, 60);
            return Date.now();
        }""",
        Output("resized", "data"),
        Input("msg-url", "children"), Input("msg-export", "children"),
        Input("caption-a", "children"), Input("caption-b", "children"),
        Input("details", "children"), Input("msg-details", "children"),
    )

    @app.callback(
        Output("msg-export", "children"), Input("export", "n_clicks"),
        State("view-a", "data"), State("view-b", "data"), prevent_initial_call=True,
    )
    def export(n_clicks, data_a, data_b):
        try:
            written = []
            for key, data in (("a", data_a), ("b", data_b)):
                view = _view(runs, data)
                if view is not None:
                    written.append(str(runs[key].export(view)))
            return "Wrote " + ", ".join(dict.fromkeys(written)) if written else "Nothing drawn."
        except Exception as exc:
            return explain(exc)


def _select(runs: dict[str, RunData], trigger: str | None, sel_a: Any, sel_b: Any,
            data_a: Any, data_b: Any, last: Any) -> tuple:
    """Selection in one panel: details of its images, their nodes ringed in the other."""

    from deepprofile.explore.elements import BASE_STYLE

    views = {"a": _view(runs, data_a), "b": _view(runs, data_b)}
    selected = {"a": sel_a or [], "b": sel_b or []}
    if trigger in ("graph-a", "graph-b"):
        source = trigger[-1] if selected[trigger[-1]] else None
    else:  # a graph was redrawn: keep the last source if its panel still has a selection
        source = (last or {}).get("source")
        if source and not selected.get(source):
            source = None
    other = {"a": "b", "b": "a"}
    if source is None or views[source] is None:
        return _nothing_selected()
    view = views[source]
    run = runs[source]
    ids = [n for n in (view.node_id(str(d.get("id", ""))) for d in selected[source]) if n]
    if not ids:  # a selection of a graph since redrawn
        return _nothing_selected()
    rows = view.rows_of(ids)
    target_key = other[source]
    target = views[target_key]
    styles = {source: list(BASE_STYLE), target_key: list(BASE_STYLE)}
    captions = {source: "", target_key: ""}
    if target is not None:
        target_run = runs[target_key]
        shared = rows if target_run is run else target_run.rows_for_dataset_indices(
            run.dataset_indices[rows])
        linked = linked_nodes(target, shared)
        styles[target_key] = stylesheet(target, linked)
        captions[target_key] = (
            f"{len(linked)} of {len(target.node_ids)} nodes of {target.layer} hold the "
            f"{len(shared)} selected images (ringed in red; ring width: their share of the node)")
    details = _details(run, view, ids, rows)
    return (details, styles["a"], styles["b"], captions["a"], captions["b"],
            {"source": source}, "")


def _nothing_selected() -> tuple:
    from dash import html

    from deepprofile.explore.elements import BASE_STYLE

    hint = html.Div("Click a node (shift-click or box-select for several) to see its images.",
                    style={"color": "#666", "fontSize": "13px"})
    return hint, list(BASE_STYLE), list(BASE_STYLE), "", "", {"source": None}, ""


def _details(run: RunData, view: GraphView, ids: list[str], rows: np.ndarray) -> Any:
    """Thumbnails, labels, predictions, mean attribution map, concept composition."""
    from dash import html

    from deepprofile.mapper.page import png_data_uri

    labels, preds, ds_idx = run.labels[rows], run.predictions[rows], run.dataset_indices[rows]
    correct = float((labels == preds).mean()) if len(rows) else float("nan")
    head = html.H3(f"{len(ids)} node(s) of {view.layer} in {run.name}: {len(rows)} images, "
                   f"{100 * correct:.0f}% predicted correctly", style={"margin": "4px 0"})
    parts: list[Any] = [head]
    shown = rows[:MAX_THUMBNAILS]
    thumbs = run.thumbnails(shown)
    if thumbs:
        imgs = [html.Img(src=thumbs[int(r)], title=(
            f"row {int(r)}, image {int(run.dataset_indices[r])}: label "
            f"{run.class_name(int(run.labels[r]))}, predicted "
            f"{run.class_name(int(run.predictions[r]))}"),
            className="dp-thumb", width=48, height=48,
            style={"imageRendering": "pixelated", "margin": "1px", "border": "2px solid " + (
                "#2ca02c" if run.labels[r] == run.predictions[r] else "#d62728")})
            for r in shown if int(r) in thumbs]
        more = f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
        parts += [html.H4("Images" + more + " (green frame: correct)"), html.Div(imgs)]
    else:
        parts.append(html.Div(f"No thumbnails: {run.dataset_note or 'dataset unavailable'}.",
                              style={"color": "#666"}))
    side: list[Any] = [_histogram("labels", labels, run), _histogram("predictions", preds, run)]
    mean = run.mean_attribution(rows)
    if mean is not None:
        image, k, method = mean
        side.append(html.Div([
            html.H4(f"Mean attribution map ({method}, {k} of {len(rows)} images have maps)"),
            html.Img(src=png_data_uri(image), id="mean-attribution", width=96, height=96,
                     style={"imageRendering": "pixelated", "border": "1px solid #ccc"}),
        ], style={"marginRight": "16px"}))
    elif run.attribution() is not None:
        side.append(html.Div("No attribution maps for these images.", style={"color": "#666"}))
    comp = run.concept_composition(rows)
    if comp:
        side.append(html.Div([html.H4("Concept composition (selection vs run)"), html.Table(
            [html.Tr([html.Td(name), html.Td(_bar(s)), html.Td(f"{100 * s:.0f}%"),
                      html.Td(f"run {100 * t:.0f}%", style={"color": "#777"})])
             for name, s, t in comp], style={"fontSize": "12px"})], id="concepts"))
    parts.append(html.Div(side, style={"display": "flex", "gap": "16px", "flexWrap": "wrap"}))
    table_rows = [html.Tr([html.Th(h) for h in ("row", "image", "label", "prediction")])] + [
        html.Tr([html.Td(int(r)), html.Td(int(i)), html.Td(run.class_name(int(y))),
                 html.Td(run.class_name(int(p)))])
        for r, i, y, p in zip(rows[:MAX_TABLE_ROWS], ds_idx, labels, preds, strict=False)]
    parts += [html.H4("Members" + (f" (first {MAX_TABLE_ROWS})" if len(rows) > MAX_TABLE_ROWS
                                   else "")),
              html.Div(html.Table(table_rows, id="members",
                                  style={"fontSize": "12px", "borderSpacing": "10px 1px"}),
                       style={"maxHeight": "220px", "overflowY": "auto"})]
    return html.Div(parts, style={"background": "#fff", "border": "1px solid #ddd",
                                  "padding": "8px", "borderRadius": "4px"})


def _bar(share: float) -> Any:
    from dash import html

    return html.Div(style={"background": "#4c78a8", "height": "9px",
                           "width": f"{round(120 * share)}px"})


def _histogram(title: str, values: np.ndarray, run: RunData) -> Any:
    from dash import html

    codes, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    total = max(int(counts.sum()), 1)
    return html.Div([html.H4(title.capitalize()), html.Table([html.Tr([
        html.Td(html.Span(style={"display": "inline-block", "width": "9px", "height": "9px",
                                 "background": category_colour(int(codes[j]))})),
        html.Td(run.class_name(int(codes[j]))), html.Td(_bar(counts[j] / total)),
        html.Td(int(counts[j]))]) for j in order], style={"fontSize": "12px"})],
        style={"marginRight": "16px"})
