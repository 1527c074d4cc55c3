"""Rendering of the report pages: the run report and the comparison of two runs.

The report reads ``RUN_DIR/run.json`` and ``RUN_DIR/results/*.json`` and never recomputes:
it can be rebuilt at any time from the results alone. It is one self-contained file:
plotly.js is embedded once (from the installed plotly package), each figure is rendered
without its own copy, and nothing is fetched from the network. Mapper pages stay beside
the results (``RUN_DIR/mapper/<layer>.html``) and are linked relative to wherever the
report is written.

The sections come from the registries in :mod:`deepprofile.report.registry`, filled by
:mod:`deepprofile.report.sections` (one module per analysis) and
:mod:`deepprofile.report.compare_sections`.

Every string that came from a model, a dataset or a path is escaped: the jinja2
environment autoescapes, figure labels go through :func:`~deepprofile.report.figures.esc`
and figure JSON is checked not to end its ``<script>`` early.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepprofile.errors import DeepProfileError, MissingFileError
from deepprofile.report.blocks import Section, Text, dataset_text, fmt, pct
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import COMPARE_SECTIONS, SECTIONS, SectionBuilder
from deepprofile.report.sections import SECTION_MODULES  # noqa: F401 - fills the registries
from deepprofile.results import write_text

TEMPLATES = Path(__file__).with_name("templates")


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
    to the output's folder. ``strict`` raises when a section fails or a results file is
    unreadable (invalid JSON, no permission) instead of showing a note in its place.
    Nothing is recomputed: only ``run.json`` and ``results/*.json`` are read.
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
    ctx = ReportContext(run, out.parent, strict=strict)
    ctx.read_all()
    secs = _build_sections(ctx, SECTIONS if sections is None else sections, strict)
    ov = ctx.overview or {}
    model = ov.get("model") or "model"
    page_title = title or f"deepprofile report: {model} on {dataset_text(ov.get('dataset'))}"
    subtitle = (f"weights {ov.get('weights_hash', '?')} · {fmt(ov.get('n_samples'))} samples "
                f"· accuracy {pct(ov.get('accuracy'))}") if ov else str(run)
    footer = (f"Made by deepprofile {_version()} on {now_iso()} from {run}; self-contained, "
              "no network needed (plotly.js embedded).")
    html = render_page(page_title, subtitle, secs, ctx.notes, footer)
    return write_text(out, html)


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
                f"{b.get('weights_hash')} · {dataset_text(a.get('dataset'))}")
    footer = (f"Made by deepprofile {_version()} on {now_iso()}; self-contained, no network "
              "needed (plotly.js embedded).")
    return write_text(out, render_page(title, subtitle, secs, ctx.notes, footer))
