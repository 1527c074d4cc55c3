"""The registries of report sections: which builders make a page, in which order.

A section builder is a function ``builder(ctx: ReportContext) -> Section | None`` (``None``
when its results are absent). :data:`SECTIONS` makes the report of a run folder,
:data:`COMPARE_SECTIONS` the comparison report of two runs; both are filled when
:mod:`deepprofile.report.sections` is imported (see its docstring for how to add one).
"""

from __future__ import annotations

from collections.abc import Callable

from deepprofile.report.blocks import Section
from deepprofile.report.context import ReportContext

SectionBuilder = Callable[[ReportContext], "Section | None"]

SECTIONS: list[SectionBuilder] = []
"""The section builders of a run report, in page order."""

COMPARE_SECTIONS: list[SectionBuilder] = []
"""The section builders of a comparison report, in page order."""


def register_section(builder: SectionBuilder, *, after: str | None = None,
                     registry: list[SectionBuilder] | None = None) -> None:
    """Add ``builder`` to the report (at the end, or after the section builder named
    ``<after>_section``); registering the same function twice is a no-op.

    ``registry`` defaults to :data:`SECTIONS`; pass :data:`COMPARE_SECTIONS` for a
    section of the comparison report.
    """
    reg = SECTIONS if registry is None else registry
    if builder in reg:
        return
    if after is not None:
        for i, b in enumerate(reg):
            if b.__name__ in (after, f"{after}_section"):
                reg.insert(i + 1, builder)
                return
    reg.append(builder)
