"""HTML reports: one self-contained page per run folder, and a comparison of two runs.

``build_report(run_dir, output=None) -> Path`` renders ``RUN_DIR/run.json`` and
``RUN_DIR/results/*.json`` (never recomputing anything); ``build_comparison_report(
out_dir_or_result, output) -> Path`` renders what :func:`deepprofile.compare.compare_runs`
wrote. Sections come from a registry (:data:`SECTIONS`, :func:`register_section`): one
module per analysis in :mod:`deepprofile.report.sections` (its docstring says how to add
one), the comparison's in :mod:`deepprofile.report.compare_sections`.

Layout: :mod:`~deepprofile.report.blocks` (what sections are made of),
:mod:`~deepprofile.report.context` (what a builder gets), :mod:`~deepprofile.report.registry`,
:mod:`~deepprofile.report.figures` (plotly figures), :mod:`~deepprofile.report.page`
(rendering, ``build_report``).
"""

from deepprofile.report.blocks import (
    FigureBlock,
    Frame,
    Grid,
    Heading,
    KeyValues,
    Link,
    Section,
    Table,
    Text,
    fmt,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.page import build_comparison_report, build_report, render_page
from deepprofile.report.registry import COMPARE_SECTIONS, SECTIONS, register_section

__all__ = [
    "COMPARE_SECTIONS", "SECTIONS", "FigureBlock", "Frame", "Grid", "Heading", "KeyValues",
    "Link", "ReportContext", "Section", "Table", "Text", "build_comparison_report",
    "build_report", "fmt", "register_section", "render_page",
]
