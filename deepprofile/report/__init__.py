"""HTML reports: one self-contained page per run folder, and a comparison of two runs.

``build_report(run_dir, output=None) -> Path`` renders ``RUN_DIR/run.json`` and
``RUN_DIR/results/*.json`` (never recomputing anything); ``build_comparison_report(
out_dir_or_result, output) -> Path`` renders what :func:`deepprofile.compare.compare_runs`
wrote. Sections come from a registry (:data:`SECTIONS`, :func:`register_section`).
"""

from deepprofile.report.build import (
    COMPARE_SECTIONS,
    SECTIONS,
    ReportContext,
    Section,
    build_comparison_report,
    build_report,
    register_section,
)

__all__ = [
    "COMPARE_SECTIONS", "SECTIONS", "ReportContext", "Section", "build_comparison_report",
    "build_report", "register_section",
]
