"""The sections of the run report, one module per analysis.

How a section gets onto the page
--------------------------------
Each module here defines one builder, ``<name>_section(ctx: ReportContext) -> Section |
None``, and registers it on its last line::

    # deepprofile/report/sections/concepts.py
    from deepprofile.report.blocks import Section, Table
    from deepprofile.report.context import ReportContext
    from deepprofile.report.registry import register_section

    def concepts_section(ctx: ReportContext) -> Section | None:
        data = ctx.result("concepts")          # RUN_DIR/results/concepts.json, or None
        if data is None:
            return None                         # analysis not run: no section
        sec = Section(ctx.unique_id("concepts"), "Concepts", key="concepts", intro="...")
        sec.add(ctx.figure(fig, "What the figure shows and how to read it."))
        return sec

    register_section(concepts_section)

then its module name goes into :data:`SECTION_MODULES` below, at the place the section
should take on the page (modules are imported, hence registered, in that order;
``register_section(builder, after="mapper")`` places a builder explicitly instead).
Builders read results only (``ctx.result(name)``) and never recompute; a builder that
raises is replaced by a note on the page (or re-raised with ``build_report(strict=True)``).

Comparison report
-----------------
Sections of the comparison of two runs live in :mod:`deepprofile.report.compare_sections`
and register into the other registry:
``register_section(compare_concepts_section, registry=COMPARE_SECTIONS)``; they read
``ctx.result("compare")`` (``results/compare.json`` of the compare folder).

Code outside the package can also call :func:`deepprofile.report.register_section` at
run time (e.g. in a notebook) before ``build_report``.
"""

from __future__ import annotations

import importlib

from deepprofile.report.registry import COMPARE_SECTIONS, SECTIONS, register_section

SECTION_MODULES: tuple[str, ...] = (
    "overview", "capture", "topology", "mapper", "spectral", "attribution", "concepts",
    "data_attribution",
)
"""Modules of this package whose builders make the run report, in page order."""

for _name in SECTION_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
importlib.import_module("deepprofile.report.compare_sections")

__all__ = ["COMPARE_SECTIONS", "SECTIONS", "SECTION_MODULES", "register_section"]
