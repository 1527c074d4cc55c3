"""The HTML inspection report of a run folder, and of a comparison of two runs.

The report reads ``RUN_DIR/run.json`` and ``RUN_DIR/results/*.json`` and never recomputes:
it can be rebuilt at any time from the results alone. It is one self-contained file:
plotly.js is embedded once (from the installed plotly package), each figure is rendered
without its own copy, and nothing is fetched from the network. Mapper pages stay beside
the results (``RUN_DIR/mapper/<layer>.html``) and are linked relative to wherever the
report is written.

Sections come from a registry, :data:`SECTIONS`: a list of builders, each a function
``builder(ctx: ReportContext) -> Section | None`` that returns ``None`` when its results
are absent. A later analysis adds its section with :func:`register_section`::

    def concepts_section(ctx):
        data = ctx.result("concepts")
        if data is None:
            return None
        sec = Section(ctx.unique_id("concepts"), "Concepts", intro="...")
        sec.add(ctx.figure(fig, "What the figure shows and how to read it."))
        return sec

    register_section(concepts_section, after="attribution")

Every string that came from a model, a dataset or a path is escaped: the jinja2
environment autoescapes, figure labels go through :func:`~deepprofile.report.figures.esc`
and figure JSON is checked not to end its ``<script>`` early.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from deepprofile.errors import DeepProfileError, MissingFileError
from deepprofile.report import figures as F
from deepprofile.results import write_text

TEMPLATES = Path(__file__).with_name("templates")


# --------------------------------------------------------------------------------------
# blocks: what a section is made of (the template renders each kind)
# --------------------------------------------------------------------------------------
@dataclass
class Link:
    """A link; ``missing`` marks a target that does not exist (shown, not linked)."""

    text: str
    href: str
    missing: bool = False
    kind: str = "link"


@dataclass
class Text:
    text: str
    note: bool = False
    kind: str = "text"


@dataclass
class Heading:
    """A sub-heading; it gets its own entry in the table of contents."""

    id: str
    title: str
    kind: str = "heading"


@dataclass
class KeyValues:
    rows: list[tuple[str, Any]]
    caption: str = ""
    kind: str = "kv"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    id: str = ""
    numeric: list[bool] = field(default_factory=list)
    kind: str = "table"


@dataclass
class FigureBlock:
    """A rendered plotly figure (``html`` is plotly's div + script) and its caption."""

    id: str
    caption: str
    html: str
    title: str = ""
    wide: bool = False
    kind: str = "figure"


@dataclass
class Grid:
    """Blocks side by side (two per row on a laptop screen, one on a narrow window)."""

    items: list[Any]
    kind: str = "grid"


@dataclass
class Frame:
    """An embedded page (a mapper page) in a collapsed box, loaded when opened."""

    id: str
    src: str
    title: str
    caption: str = ""
    kind: str = "frame"


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Any] = field(default_factory=list)
    key: str = ""

    def add(self, *blocks: Any) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self

    @property
    def toc(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading)]

    @property
    def n_figures(self) -> int:
        def count(b: Any) -> int:
            if isinstance(b, FigureBlock):
                return 1
            if isinstance(b, Grid):
                return sum(count(i) for i in b.items)
            return 0

        return sum(count(b) for b in self.blocks)


# --------------------------------------------------------------------------------------
# context handed to every section builder
# --------------------------------------------------------------------------------------
class ReportContext:
    """What a section builder needs: the run's overview and results (read once, cached),
    links relative to the report's folder, unique element ids and figure rendering."""

    def __init__(self, run_dir: str | Path, output_dir: str | Path,
                 results: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.output_dir = Path(output_dir)
        self.notes: list[str] = []
        self._cache: dict[str, Any] = dict(results or {})
        self._ids: set[str] = set()

    # -- data ---------------------------------------------------------------------------
    @property
    def overview(self) -> dict[str, Any] | None:
        if "__overview__" not in self._cache:
            path = self.run_dir / "run.json"
            self._cache["__overview__"] = self._read(path) if path.exists() else None
        return self._cache["__overview__"]

    def result_names(self) -> list[str]:
        """Names of the result files present (``results/<name>.json``)."""
        found = {p.stem for p in (self.run_dir / "results").glob("*.json")}
        found |= {k for k in self._cache if not k.startswith("__") and self._cache[k]}
        return sorted(found)

    def result(self, name: str) -> Any:
        """``results/<name>.json`` as plain data, or ``None`` when absent or unreadable
        (an unreadable file is reported in the page's notes)."""
        if name not in self._cache:
            path = self.run_dir / "results" / f"{name}.json"
            self._cache[name] = self._read(path) if path.exists() else None
        return self._cache[name]

    def _read(self, path: Path) -> Any:
        from deepprofile.results import read_json

        try:
            return read_json(path)
        except DeepProfileError as exc:
            self.notes.append(str(exc))
            return None

    @property
    def class_names(self) -> list[str]:
        ov = self.overview or {}
        return [str(c) for c in (ov.get("class_names") or [])]

    def class_name(self, label: Any) -> str:
        names = self.class_names
        try:
            i = int(label)
        except (TypeError, ValueError):
            return str(label)
        return names[i] if 0 <= i < len(names) else str(i)

    # -- links and ids ------------------------------------------------------------------
    def href(self, rel: str | Path) -> str:
        """URL of ``RUN_DIR/rel`` relative to the report's folder."""
        target = (self.run_dir / rel).resolve()
        relpath = os.path.relpath(target, self.output_dir.resolve())
        return quote(Path(relpath).as_posix())

    def link(self, text: str, rel: str | Path) -> Link:
        return Link(text, self.href(rel), missing=not (self.run_dir / rel).exists())

    def unique_id(self, base: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", str(base).lower()).strip("-") or "x"
        if slug[0].isdigit():
            slug = "s-" + slug
        candidate, k = slug, 2
        while candidate in self._ids:
            candidate, k = f"{slug}-{k}", k + 1
        self._ids.add(candidate)
        return candidate

    def heading(self, title: str, base: str | None = None) -> Heading:
        return Heading(self.unique_id(base or title), title)

    def figure(self, fig: Any, caption: str, *, title: str = "", height: int | None = None,
               wide: bool = False, id_base: str = "fig") -> FigureBlock:
        div_id = self.unique_id(id_base)
        return FigureBlock(div_id, caption, F.render(fig, div_id, height), title, wide)


SectionBuilder = Callable[[ReportContext], "Section | None"]


# --------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3) -> str:
    """Compact text of a number (``–`` for missing values)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(value)


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def shape(values: Iterable[Any] | None) -> str:
    return "×".join(str(v) for v in values) if values else "–"


def short_list(values: Sequence[Any], limit: int = 8) -> str:
    values = list(values)
    if not values:
        return "none"
    head = ", ".join(str(v) for v in values[:limit])
    return f"{len(values)}: {head}" + (", …" if len(values) > limit else "")


def _dataset_text(spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return str(spec) if spec else "–"
    name = spec.get("name", "?")
    rest = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{name} ({rest})" if rest else str(name)


# --------------------------------------------------------------------------------------
# overview
# --------------------------------------------------------------------------------------
ANALYSES: tuple[tuple[str, str, str], ...] = (
    ("capture", "Capture statistics", "deepprofile capture MODEL --out RUN_DIR"),
    ("topology", "Topology (persistence, distances, CKA)", "deepprofile topology RUN_DIR"),
    ("mapper", "Mapper graphs", "deepprofile mapper RUN_DIR"),
    ("spectral", "Weight spectra", "deepprofile spectral MODEL --run RUN_DIR"),
    ("attribution", "Attributions", "deepprofile attribute RUN_DIR"),
)


def overview_section(ctx: ReportContext) -> Section | None:
    ov = ctx.overview
    if ov is None:
        return None
    sec = Section(ctx.unique_id("overview"), "Overview", key="overview",
                  intro="What was analysed: the model, the data it saw, and how this run "
                        "folder was made.")
    info = ov.get("model_info") or {}
    params = {k: v for k, v in info.items()
              if k not in ("arch", "source", "weights_hash", "extra") and v not in (None, {})}
    classes = [str(c) for c in ov.get("class_names") or []]
    rows: list[tuple[str, Any]] = [
        ("Model", ov.get("model") or info.get("arch") or "–"),
        ("Checkpoint", ov.get("checkpoint") or info.get("source") or "random init"),
        ("Weights hash", ov.get("weights_hash") or "–"),
        ("Model parameters", ", ".join(f"{k}={v}" for k, v in params.items()) or "–"),
        ("Dataset", _dataset_text(ov.get("dataset"))),
        ("Samples", fmt(ov.get("n_samples"))),
        ("Classes", short_list(classes, 20)),
        ("Layers", ", ".join(str(x) for x in ov.get("layers") or []) or "–"),
        ("Accuracy on these samples", pct(ov.get("accuracy"))),
        ("Seed", fmt(ov.get("seed"))),
        ("Date", ov.get("date") or "–"),
        ("Command", ov.get("command") or "–"),
        ("Run folder", str(ctx.run_dir)),
    ]
    sec.add(KeyValues(rows))
    stores = ov.get("stores") or {}
    if stores:
        srows = []
        for name, s in stores.items():
            layers = s.get("layers") or {}
            red = sorted({str(v.get("reduction")) for v in layers.values()})
            srows.append([name, fmt(s.get("n_samples")), ", ".join(red),
                          ", ".join(f"{k} {shape(v.get('stored_shape'))}"
                                    for k, v in layers.items())])
        sec.add(Table(["store", "samples", "reduction", "stored layers"], srows,
                      caption="Activation stores of the run (one row per store)."))
    arows = []
    for name, label, command in ANALYSES:
        present = name in ctx.result_names()
        arows.append([label, "present" if present else "not run",
                      ctx.link(f"results/{name}.json", f"results/{name}.json") if present
                      else command])
    known = {a[0] for a in ANALYSES}
    for name in ctx.result_names():
        if name not in known and not name.startswith("capture_"):
            arows.append([name, "present", ctx.link(f"results/{name}.json",
                                                    f"results/{name}.json")])
    sec.add(Table(["analysis", "status", "result file / command to run it"], arows,
                  caption="Analyses found in the run folder; the report shows a section for "
                          "each one present."))
    versions = ov.get("versions") or {}
    if versions:
        sec.add(Table(["package", "version"], [[k, v] for k, v in versions.items()],
                      caption="Package versions that made the capture."))
    return sec


# --------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------
def _capture_table(stats: Mapping[str, Any]) -> Table:
    rows = []
    for r in stats.get("layers", []):
        rows.append([
            r["layer"], shape(r.get("output_shape")), r.get("reduction", "–"),
            shape(r.get("stored_shape")), fmt(r.get("n_units")), fmt(r.get("mean")),
            fmt(r.get("std")), fmt(r.get("min")), fmt(r.get("max")),
            pct(r.get("fraction_zero")), short_list(r.get("dead_units") or []),
            short_list(r.get("saturated_units") or []),
        ])
    return Table(["layer", "output", "reduction", "stored", "units", "mean", "std", "min", "max",
                  "zeros", "dead units", "saturated units"], rows,
                 numeric=[False, False, False, False, True, True, True, True, True, True,
                          False, False])


def capture_section(ctx: ReportContext) -> Section | None:
    names = [n for n in ctx.result_names() if n == "capture" or n.startswith("capture_")]
    names.sort(key=lambda n: (n != "capture", n))
    found = [(n, ctx.result(n)) for n in names]
    found = [(n, d) for n, d in found if d]
    if not found:
        return None
    sec = Section(ctx.unique_id("capture"), "Capture", key="capture",
                  intro="Layer shapes and activation statistics of every store. A unit "
                        "(channel) is dead when it is zero on every sample, saturated when "
                        "it barely varies across samples; both carry no information about "
                        "the input.")
    for i, (name, stats) in enumerate(found):
        store = Path(str(stats.get("store", name))).name
        if len(found) > 1:
            sec.add(ctx.heading(f"Store {store}", f"capture-{store}"))
        sec.add(Text(f"{fmt(stats.get('n_samples'))} samples, accuracy "
                     f"{pct(stats.get('accuracy'))}."))
        table = _capture_table(stats)
        table.caption = ("Per layer: raw output shape, stored reduction and shape, statistics "
                         "over all samples and units, share of exact zeros, and the indices "
                         "of dead and saturated units.")
        sec.add(table)
        layers = stats.get("layers", [])
        if i == 0 and layers:
            sec.add(Grid([
                ctx.figure(F.capture_activity(layers),
                           "Share of exactly-zero activations, dead units and saturated "
                           "units per layer; tall red or orange bars mean wasted capacity.",
                           title="Sparsity and dead units", height=340),
                ctx.figure(F.capture_unit_spread(layers),
                           "Spread of the per-unit standard deviations across samples "
                           "(log scale); a long lower whisker means some units hardly "
                           "respond to the input.", title="Unit variability", height=340),
            ]))
    return sec


# --------------------------------------------------------------------------------------
# topology
# --------------------------------------------------------------------------------------
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
                         fmt(s.get("n_features")), fmt(s.get("n_essential")),
                         fmt(s.get("n_above_noise")), fmt(s.get("total_persistence")),
                         fmt(s.get("max_persistence")), fmt(s.get("entropy"), 2)])
    cols = ["layer", "points", "dim", "homology", "features", "never die", "above noise",
            "total persistence", "max persistence", "entropy"]
    noise = next((s.get("noise_threshold") for v in summaries.values() for s in v.values()),
                 None)
    sec.add(Table(cols, rows, numeric=[False, True, True, False] + [True] * 6,
                  caption="Per layer: cloud size and dimension; per homology dimension the "
                          "number of features, those that never die, those living longer "
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


# --------------------------------------------------------------------------------------
# mapper
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# spectral
# --------------------------------------------------------------------------------------
def spectral_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("spectral")
    if not data or not data.get("trained"):
        return None
    trained = data["trained"].get("layers", [])
    random = {r["layer"]: r for r in (data.get("random_init") or {}).get("layers", [])}
    alpha_hat = data.get("alpha_hat") or {}
    sec = Section(
        ctx.unique_id("spectral"), "Weight spectra", key="spectral",
        intro="Singular values of every Conv/Linear weight (unfolded to a matrix), their "
              "empirical spectral density against random-matrix theory, and the power-law "
              "exponent α of its tail (heavy-tailed, α between 2 and 6, usually means learned "
              f"structure). Model α̂: trained {fmt(alpha_hat.get('trained'), 2)}, seeded "
              f"random init {fmt(alpha_hat.get('random_init'), 2)}.")
    rows = []
    for r in trained:
        rr = random.get(r["layer"], {})
        mp = r.get("mp") or {}
        rows.append([r["layer"], r.get("module_type"), shape(r.get("matrix_shape")),
                     fmt(r.get("spectral_norm")), fmt(r.get("stable_rank"), 2),
                     fmt(r.get("alpha"), 2), fmt(rr.get("alpha"), 2),
                     fmt(r.get("alpha_weighted"), 2), fmt(mp.get("ks")),
                     fmt(mp.get("n_spikes"))])
    sec.add(Table(["layer", "type", "matrix", "spectral norm", "stable rank", "α",
                   "α random init", "α̂ (α·log₁₀ s²max)", "MP KS", "spikes above MP"], rows,
                  numeric=[False, False, False] + [True] * 7,
                  caption="Per weight layer: largest singular value, stable rank "
                          "(‖W‖²_F/‖W‖²₂), power-law exponent of the eigenvalue tail for the "
                          "trained and random-init weights, WeightWatcher's α̂, the "
                          "Kolmogorov-Smirnov distance of the Marchenko-Pastur fit and the "
                          "eigenvalues beyond its bulk edge."))
    spectra = {}
    rspectra = {}
    for r in trained:
        eig = np.asarray(r.get("eigenvalues") or [], dtype=np.float64)
        if eig.size:
            spectra[r["layer"]] = np.sqrt(np.clip(eig[::-1], 0, None) * r.get("n", 1))
        rr = random.get(r["layer"])
        if rr and rr.get("eigenvalues"):
            e = np.asarray(rr["eigenvalues"], dtype=np.float64)
            rspectra[r["layer"]] = np.sqrt(np.clip(e[::-1], 0, None) * rr.get("n", 1))
    names = [r["layer"] for r in trained]
    grid = [
        ctx.figure(F.singular_value_spectra(spectra, rspectra),
                   "Singular values of each layer in decreasing order (log-log); dotted: the "
                   "same layer at random initialisation. Training lifts the top of the "
                   "spectrum above the random curve.", title="Singular value spectra",
                   height=400),
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("alpha") for r in trained],
                                     "random init": [random.get(n, {}).get("alpha")
                                                     for n in names]},
                             ytitle="power-law α", dashed=["random init"],
                             band=(2.0, 6.0, "typical of trained layers")),
            "Power-law exponent α of each layer's eigenvalue tail by depth (gaps: too few "
            "eigenvalues to fit). Smaller α means a heavier tail, i.e. more correlated "
            "structure in the weights.", title="α by depth", height=400),
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("spectral_norm") for r in trained],
                                     "random init": [random.get(n, {}).get("spectral_norm")
                                                     for n in names]},
                             ytitle="spectral norm", dashed=["random init"]),
            "Largest singular value of each layer by depth, trained against random init.",
            title="Spectral norm by depth", height=360),
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("stable_rank") for r in trained],
                                     "random init": [random.get(n, {}).get("stable_rank")
                                                     for n in names]},
                             ytitle="stable rank", dashed=["random init"]),
            "Stable rank (effective number of directions a layer uses) by depth; a drop "
            "below random init means training concentrated the weights on fewer directions.",
            title="Stable rank by depth", height=360),
    ]
    sec.add(Grid(grid))
    fitted = [r for r in trained if r.get("mp") or r.get("power_law")][:12]
    if fitted:
        sec.add(ctx.heading("Empirical spectral densities", "spectral-esd"))
        sec.add(ctx.figure(
            F.esd_panels(fitted),
            "Histogram of the eigenvalues of WWᵀ/n per layer (log-log), with the fitted "
            "Marchenko-Pastur law of a random matrix (orange, bulk edge dotted) and the "
            "power-law tail fit (red dashed). Mass to the right of the MP edge is structure "
            "the random model does not explain.", wide=True,
            title="ESD with Marchenko-Pastur and power-law fits"))
    hgs = data.get("hypergraphs") or {}
    if hgs:
        sec.add(ctx.heading("Class hypergraphs of singular vectors", "spectral-hypergraphs"))
        p = data.get("parameters", {})
        sec.add(Text(
            "For a few convolution layers, each class is a hyperedge over the layer's top "
            "singular vectors that carry its images' energy (" + str(p.get("mode")) +
            " threshold " + str(p.get("threshold")) + "). Classes sharing vectors use the "
            "same directions; separate vectors mean class-specific features."))
        srows = []
        for name, hg in hgs.items():
            s = hg.get("summary", {})
            srows.append([name, fmt(s.get("n_vertices")), fmt(s.get("n_used_vertices")),
                          fmt(s.get("mean_size"), 1), fmt(s.get("mean_jaccard"), 2),
                          fmt(s.get("n_components_s1")), fmt(s.get("n_shared_vertices"))])
        sec.add(Table(["layer", "singular vectors", "used", "mean edge size",
                       "mean Jaccard", "s=1 components", "shared vectors"], srows,
                      numeric=[False] + [True] * 6,
                      caption="Per projected layer: vectors available and used by any class, "
                              "mean number of vectors per class, mean class-pair overlap "
                              "(Jaccard), connected components and vectors shared by many "
                              "classes."))
        for name, hg in hgs.items():
            classes = list(hg.get("classes", []))
            sec.add(Grid([
                ctx.figure(F.hypergraph_drawing(hg),
                           f"Class hypergraph of {name}: classes (squares, top) joined to "
                           "the singular vectors influential for them (dots, bottom, largest "
                           "singular value left; darker = shared by more classes).",
                           title=f"Hypergraph: {name}", height=320),
                ctx.figure(F.heatmap(hg.get("overlaps", []), classes, classes,
                                     colorscale="Blues", zmin=0, zmax=1, colorbar="Jaccard"),
                           f"Overlap (Jaccard index) of the classes' vector sets in {name}; "
                           "dark off-diagonal cells are classes the layer does not tell "
                           "apart by direction.", title=f"Class overlap: {name}", height=320),
            ]))
    op = {k: v for k, v in (data.get("operator") or {}).items() if "operator_spectral_norm" in v}
    if op:
        sec.add(Table(["layer", "input size", "operator norm", "unfolded norm", "ratio"],
                      [[k, shape(v.get("input_size")), fmt(v.get("operator_spectral_norm")),
                        fmt(v.get("unfolded_spectral_norm")), fmt(v.get("norm_ratio"))]
                       for k, v in op.items()],
                      numeric=[False, False, True, True, True],
                      caption="Exact spectral norm of the convolution as an operator on "
                              "images of the size seen (circular padding) next to the norm "
                              "of its unfolded kernel matrix."))
    return sec


# --------------------------------------------------------------------------------------
# attribution
# --------------------------------------------------------------------------------------
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
        n = len(ex["images"])
        imgs: list[np.ndarray] = []
        row_titles = []
        for i in range(n):
            imgs.append(np.asarray(ex["images"][i]))
            for k in keys:
                imgs.append(np.asarray(sal[k][i]))
            lab = ctx.class_name(ex["labels"][i]) if ex.get("labels") else "?"
            pred = ctx.class_name(ex["predictions"][i]) if ex.get("predictions") else "?"
            row_titles.append(f"label {lab}, pred {pred}")
        cols = 1 + len(keys)
        fig = F.image_grid(imgs, cols=cols, column_titles=["input"] + [
            str(labels_of.get(k, k)) for k in keys], row_titles=row_titles,
            colorscale="Greys", reverse=False, cell=max(70, min(120, 1100 // cols)))
        # the input column in grey, the maps in a heat colour scale
        for j, trace in enumerate(fig.data):
            if j % cols:
                trace.colorscale = "Inferno"
        sec.add(ctx.figure(
            fig, "Example grid: each row an image (first column) and its saliency map under "
                 "every method (|attribution| summed over channels, each map scaled to its "
                 "own maximum: bright = important). Smoother, more object-shaped maps are "
                 "easier to trust.", wide=True, title="Attribution maps"))
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
            "max_sensitivity": "max sensitivity", "infidelity": "infidelity",
            "total_variation": "total variation",
        }
        rows = [[methods.get(r["method"], {}).get("label", r["method"])]
                + [fmt(r.get(k)) for k in keys] for r in table]
        sec.add(ctx.heading("Robustness of the explanations", "attribution-robustness"))
        sec.add(Table(["method"] + [nice.get(k, k) for k in keys], rows,
                      numeric=[False] + [True] * len(keys),
                      caption="Per method, means over the images: how much the map keeps its "
                              "top pixels and ranking under small random noise and under a "
                              "targeted top-k attack (higher = more robust), how far its "
                              "centre of mass moves, max-sensitivity and infidelity (lower = "
                              "better) and total variation (lower = smoother)."))
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
        maps, titles = [], []
        for nid in shown:
            nd = nodes["nodes"][nid]
            maps.append(np.asarray(nd.get("mean_map") or [[0]]))
            lc = nd.get("label_counts") or {}
            top = max(lc.items(), key=lambda kv: kv[1])[0] if lc else "?"
            titles.append(f"{nid} · n={nd.get('n_members')} · mostly {ctx.class_name(top)}")
        sec.add(ctx.figure(
            F.image_grid(maps, titles=[t.replace("_cluster", "/c") for t in titles], cols=6,
                         colorscale="Inferno", reverse=False, cell=150),
            f"Mean {nodes.get('method')} saliency map of the images in each mapper node of "
            f"{nodes.get('layer')} (title: node, size, majority label; the first 16 nodes). "
            "Nodes whose maps "
            "differ rely on different evidence.", wide=True, title="Mean map per node"))
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


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------
SECTIONS: list[SectionBuilder] = [
    overview_section, capture_section, topology_section, mapper_section, spectral_section,
    attribution_section,
]
"""The section builders of a run report, in page order."""


def register_section(builder: SectionBuilder, *, after: str | None = None,
                     registry: list[SectionBuilder] | None = None) -> None:
    """Add ``builder`` to the report (at the end, or after the section builder named
    ``<after>_section``); registering the same function twice is a no-op."""
    reg = SECTIONS if registry is None else registry
    if builder in reg:
        return
    if after is not None:
        for i, b in enumerate(reg):
            if b.__name__ in (after, f"{after}_section"):
                reg.insert(i + 1, builder)
                return
    reg.append(builder)


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every {{ value }} is HTML-escaped unless marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    return env


def plotly_js() -> str:
    """plotly.js from the installed plotly package, safe to inline in a ``<script>``."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def render_page(title: str, subtitle: str, sections: Sequence[Section],
                notes: Sequence[str] = (), footer: str = "") -> str:
    """The report's HTML: sections, table of contents, plotly.js inlined once."""
    from markupsafe import Markup

    env = _environment()
    template = env.get_template("report.html.j2")
    n_figs = sum(s.n_figures for s in sections)
    return template.render(
        title=title, subtitle=subtitle, sections=sections, notes=list(notes),
        footer=footer, plotly_js=Markup(plotly_js()) if n_figs else None,
        Markup=Markup,
    )


def _build_sections(ctx: ReportContext, builders: Sequence[SectionBuilder],
                    strict: bool) -> list[Section]:
    sections = []
    for builder in builders:
        try:
            sec = builder(ctx)
        except Exception as exc:
            if strict:
                raise
            name = builder.__name__.removesuffix("_section")
            msg = (f"The {name} section could not be drawn from its results "
                   f"({type(exc).__name__}: {exc}); the results file may come from another "
                   "version of deepprofile. Re-run that analysis.")
            warnings.warn(msg, stacklevel=2)
            sec = Section(ctx.unique_id(name), name.capitalize(), key=name,
                          blocks=[Text(msg, note=True)])
        if sec is not None:
            sections.append(sec)
    return sections


def _version() -> str:
    try:
        import deepprofile

        return str(deepprofile.__version__)
    except Exception:  # noqa: BLE001 - only used in the footer
        return "?"


def build_report(run_dir: str | Path, output: str | Path | None = None, *,
                 title: str | None = None, strict: bool = False,
                 sections: Sequence[SectionBuilder] | None = None) -> Path:
    """Write the HTML report of a run folder and return its path.

    ``output`` defaults to ``RUN_DIR/report.html``; links to the mapper pages are relative
    to the output's folder. ``strict`` raises when a section fails instead of showing a
    note in its place. Nothing is recomputed: only ``run.json`` and ``results/*.json``
    are read.
    """
    from deepprofile.provenance import now_iso

    run = Path(run_dir)
    if not run.is_dir():
        raise MissingFileError(f"Run folder {run} does not exist. Make one with "
                               "`deepprofile capture MODEL --out RUN_DIR`.")
    if not (run / "run.json").exists() and not (run / "results").is_dir():
        raise MissingFileError(
            f"{run} is not a run folder (no run.json, no results/). Make one with "
            "`deepprofile capture MODEL --out RUN_DIR`, then run the analyses.")
    out = Path(output) if output is not None else run / "report.html"
    if out.is_dir():
        out = out / "report.html"
    ctx = ReportContext(run, out.parent)
    secs = _build_sections(ctx, SECTIONS if sections is None else sections, strict)
    ov = ctx.overview or {}
    model = ov.get("model") or "model"
    page_title = title or f"deepprofile report: {model} on {_dataset_text(ov.get('dataset'))}"
    subtitle = (f"weights {ov.get('weights_hash', '?')} · {fmt(ov.get('n_samples'))} samples "
                f"· accuracy {pct(ov.get('accuracy'))}") if ov else str(run)
    footer = (f"Made by deepprofile {_version()} on {now_iso()} from {run}; self-contained, "
              "no network needed (plotly.js embedded).")
    html = render_page(page_title, subtitle, secs, ctx.notes, footer)
    return write_text(out, html)


# --------------------------------------------------------------------------------------
# comparison report
# --------------------------------------------------------------------------------------
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
        conv = {"dataset": _dataset_text, "accuracy": pct, "n_samples": fmt,
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


COMPARE_SECTIONS: list[SectionBuilder] = [
    compare_runs_section, compare_topology_section, compare_mapper_section,
    compare_spectral_section,
]
"""The section builders of a comparison report, in page order."""


def build_comparison_report(out_dir_or_result: Any, output: str | Path | None = None, *,
                            strict: bool = False) -> Path:
    """Write the comparison report and return its path.

    ``out_dir_or_result``: a compare folder (holding ``results/compare.json``, as written by
    :func:`deepprofile.compare.compare_runs`) or a
    :class:`~deepprofile.compare.ComparisonResult`. ``output`` defaults to
    ``<compare folder>/report.html`` (required when a result object is given).
    """
    from deepprofile.provenance import now_iso

    if hasattr(out_dir_or_result, "to_dict"):
        data = out_dir_or_result.to_dict()
        folder = Path(data.get("out_dir") or ".")
        if output is None:
            if not data.get("out_dir"):
                raise DeepProfileError("Give an output path for a comparison result object.")
            output = folder / "report.html"
    else:
        folder = Path(out_dir_or_result)
        path = folder / "results" / "compare.json"
        if not path.exists():
            raise MissingFileError(f"{path} does not exist; run `deepprofile compare RUN_A "
                                   f"RUN_B --out {folder}` first.")
        from deepprofile.results import read_json

        data = read_json(path)
    out = Path(output) if output is not None else folder / "report.html"
    if out.is_dir():
        out = out / "report.html"
    ctx = ReportContext(folder, out.parent, results={"compare": data})
    secs = _build_sections(ctx, COMPARE_SECTIONS, strict)
    a, b = data.get("run_a", {}), data.get("run_b", {})
    title = (f"deepprofile comparison: {Path(str(a.get('path', 'A'))).name} vs "
             f"{Path(str(b.get('path', 'B'))).name}")
    subtitle = (f"A: {a.get('model')} {a.get('weights_hash')} · B: {b.get('model')} "
                f"{b.get('weights_hash')} · {_dataset_text(a.get('dataset'))}")
    footer = (f"Made by deepprofile {_version()} on {now_iso()}; self-contained, no network "
              "needed (plotly.js embedded).")
    return write_text(out, render_page(title, subtitle, secs, ctx.notes, footer))


__all__ = [
    "COMPARE_SECTIONS", "SECTIONS", "FigureBlock", "Frame", "Grid", "Heading", "KeyValues",
    "Link", "ReportContext", "Section", "Table", "Text", "build_comparison_report",
    "build_report", "fmt", "register_section", "render_page",
]
