"""The explorer's Dash app: layout (a tree of components) and the factory that wires it.

``create_app(run_a, run_b=None)`` opens the run folder(s) and returns a ``dash.Dash``
whose every script and stylesheet is served from the installed packages
(``serve_locally``; no CDN, no web font). A run that cannot be opened does not raise:
the page shows what was wrong, so the browser never sees a traceback.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from deepprofile.errors import DeepProfileError
from deepprofile.explore.data import MapperParams, RunData
from deepprofile.mapper import LENSES

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
PANEL = {"flex": "1 1 0", "minWidth": "320px", "border": "1px solid #ddd", "borderRadius": "4px",
         "padding": "6px", "background": "#fff"}
MESSAGE = {"color": "#a00000", "fontSize": "13px", "minHeight": "1em", "whiteSpace": "pre-wrap"}
LABEL = {"fontSize": "12px", "color": "#444", "display": "block"}


def _control(label: str, component: Any) -> Any:
    from dash import html

    return html.Div([html.Label(label, style=LABEL), component],
                    style={"display": "inline-block", "marginRight": "10px",
                           "verticalAlign": "top"})


def _number(id_: str, value: Any, width: str = "70px", placeholder: str = "") -> Any:
    from dash import dcc

    # type="text": out-of-range values reach the server, which answers with a message
    # (a number input would silently send None).
    return dcc.Input(id=id_, value="" if value is None else str(value), type="text",
                     debounce=True, placeholder=placeholder,
                     style={"width": width, "fontSize": "13px"})


def _panel(key: str, title: str, layers: list[str], layer: str) -> Any:
    import dash_cytoscape as cyto
    from dash import dcc, html

    from deepprofile.explore.elements import BASE_STYLE

    return html.Div([
        html.Div([
            html.B(title, style={"marginRight": "8px"}),
            dcc.Dropdown(id=f"layer-{key}", options=[{"label": n, "value": n} for n in layers],
                         value=layer, clearable=False,
                         style={"width": "220px", "display": "inline-block",
                                "verticalAlign": "middle", "fontSize": "13px"}),
        ]),
        html.Div(id=f"caption-{key}", style={"fontSize": "12px", "color": "#333",
                                             "margin": "4px 0", "height": "16px"}),
        html.Div(id=f"msg-{key}", style={**MESSAGE, "height": "32px", "overflowY": "auto"}),
        cyto.Cytoscape(
            id=f"graph-{key}", elements=[], stylesheet=list(BASE_STYLE),
            layout={"name": "preset", "fit": True, "padding": 12},
            boxSelectionEnabled=True, minZoom=0.05, maxZoom=8,
            style={"width": "100%", "height": "460px", "background": "#fafafa"},
        ),
        html.Div(id=f"hover-{key}", style={"fontSize": "12px", "color": "#333",
                                           "height": "16px", "overflow": "hidden"}),
        html.Div(id=f"legend-{key}", style={"fontSize": "12px"}),
        html.Div(id=f"linked-{key}", style={"fontSize": "12px", "color": "#a0001f"}),
        dcc.Store(id=f"view-{key}"),
    ], style=PANEL)


def error_layout(message: str) -> Any:
    """The page shown when a run cannot be explored."""
    from dash import html

    return html.Div([
        html.H2("deepprofile explorer"),
        html.Div(message, id="load-error", style={**MESSAGE, "fontSize": "15px"}),
    ], style={"fontFamily": FONT, "margin": "16px"})


def build_layout(runs: dict[str, RunData], layers: dict[str, str], params: MapperParams,
                 colour_options: list[dict[str, str]]) -> Any:
    """The page: parameter bar, two graph panels side by side, selection details."""
    from dash import dcc, html

    a, b = runs["a"], runs["b"]
    two = a is not b
    title = f"{a.name} vs {b.name}" if two else a.name
    bar = html.Div([
        _control("lens", dcc.Dropdown(
            id="lens", options=[{"label": n, "value": n} for n in LENSES], value=params.lens,
            clearable=False, style={"width": "130px", "fontSize": "13px"})),
        _control("intervals", _number("intervals", params.intervals)),
        _control("overlap", _number("overlap", params.overlap)),
        _control("eps (empty: auto)", _number("eps", params.eps, placeholder="auto")),
        _control("min_samples", _number("min-samples", params.min_samples)),
        _control("subsample (empty: all)", _number("subsample", params.subsample, "90px",
                                                   "all")),
        _control("colour nodes by", dcc.Dropdown(
            id="colour", options=colour_options, value="label", clearable=False,
            style={"width": "250px", "fontSize": "13px"})),
        _control("export", html.Button("Export views to static pages", id="export",
                                       n_clicks=0, style={"fontSize": "13px"})),
    ], style={"marginBottom": "6px"})
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="selection"),
        dcc.Store(id="resized"),
        html.H2(f"deepprofile explorer: {title}", style={"margin": "4px 0 8px 0"}),
        html.Div(id="msg-url", style=MESSAGE),
        bar,
        html.Div(id="msg-export", style={**MESSAGE, "color": "#1a5e1a"}),
        html.Div([
            _panel("a", a.name, a.layers, layers["a"]),
            _panel("b", b.name if two else f"{a.name} (linked layer)", b.layers, layers["b"]),
        ], style={"display": "flex", "gap": "8px"}),
        html.Div(id="msg-details", style=MESSAGE),
        html.Div(id="details", children=html.Div(
            "Click a node (shift-click or box-select for several) to see its images.",
            style={"color": "#666", "fontSize": "13px"}),
            style={"marginTop": "8px"}),
    ], style={"fontFamily": FONT, "margin": "10px", "background": "#f4f4f4"})


def default_params(run: RunData) -> MapperParams:
    """Start from the run's results/mapper.json parameters when present."""
    from deepprofile.rundir import RunDir

    rd = RunDir(run.path)
    p: dict[str, Any] = {}
    if rd.has_result("mapper"):
        try:
            p = dict(rd.read_result("mapper").get("params") or {})
        except Exception:  # an unreadable file: the defaults
            p = {}
    base = MapperParams()
    try:
        return MapperParams.from_ui(
            p.get("lens", base.lens), p.get("intervals", base.intervals),
            p.get("overlap", base.overlap), p.get("eps"), p.get("min_samples", base.min_samples),
            None, seed=int(p.get("seed", 0)))
    except DeepProfileError:
        return base


def create_app(run_a: str | Path, run_b: str | Path | None = None, *,
               layer: str | None = None, layer_b: str | None = None,
               params: MapperParams | None = None) -> Any:
    """The explorer over ``run_a`` (and ``run_b``: same layer side by side)."""
    import dash

    app = dash.Dash(
        __name__, title="deepprofile explorer", update_title=None, serve_locally=True,
        external_scripts=[], external_stylesheets=[], assets_folder=str(
            Path(__file__).with_name("assets")), include_assets_files=False,
        suppress_callback_exceptions=True,
    )
    app.scripts.config.serve_locally = True
    app.css.config.serve_locally = True
    try:
        runs = {"a": RunData.open(run_a, name=_name(run_a, run_b, "A"))}
        runs["b"] = RunData.open(run_b, name=_name(run_b, run_a, "B")) if run_b else runs["a"]
    except DeepProfileError as exc:
        app.layout = error_layout(f"Cannot explore this run: {exc}")
        return app
    except Exception as exc:  # anything else unreadable: still a message, not a traceback
        app.layout = error_layout(f"Cannot explore this run: {type(exc).__name__}: {exc}")
        return app
    a, b = runs["a"], runs["b"]
    first = layer or a.layers[-1]
    notes = []
    try:
        first = a.check_layer(first)
    except DeepProfileError as exc:
        notes.append(str(exc))
        first = a.layers[-1]
    if layer_b:
        second = layer_b
    elif b is not a:
        second = first if first in b.layers else b.layers[-1]
    else:
        i = a.layers.index(first)
        second = a.layers[i - 1] if i > 0 else a.layers[min(1, len(a.layers) - 1)]
    try:
        second = b.check_layer(second)
    except DeepProfileError as exc:
        notes.append(str(exc))
        second = b.layers[-1]
    if b is not a:
        shared = len(b.rows_for_dataset_indices(a.dataset_indices))
        if shared == 0:
            notes.append(f"{a.name} and {b.name} share no images (by dataset index): a "
                         "selection in one cannot be shown in the other.")
    params = params or default_params(a)
    options = colour_options(a, b)
    app.layout = build_layout(runs, {"a": first, "b": second}, params, options)
    from deepprofile.explore.callbacks import register_callbacks

    register_callbacks(app, runs, startup_notes=notes)
    app.explore_runs = runs  # for tests and the benchmark
    app.explore_initial = {"a": first, "b": second, "params": asdict(params)}
    return app


def _name(path: Any, other: Any, fallback: str) -> str:
    name = Path(path).resolve().name if path else fallback
    if other and Path(other).resolve().name == name:
        name = f"{name} ({fallback})"
    return name


def colour_options(a: RunData, b: RunData) -> list[dict[str, str]]:
    """Colour columns offered by both runs (label, prediction, ... concepts)."""
    cols_a = a.columns()
    cols_b = b.columns() if b is not a else cols_a
    return [{"label": c.label, "value": k} for k, c in cols_a.items() if k in cols_b]
