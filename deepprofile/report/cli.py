"""``deepprofile report`` and ``deepprofile compare``.

Heavy imports (plotly, jinja2, the analyses) happen inside the commands so that
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``report`` and ``compare`` commands to the main app."""

    @app.command("report")
    def report(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with run.json and results/).")],
        output: Annotated[Path | None, typer.Option(
            "--output", "-o",
            help="HTML file to write (default: RUN_DIR/report.html); mapper pages are "
                 "linked relative to it.")] = None,
        title: Annotated[str | None, typer.Option(help="Page title.")] = None,
        strict: Annotated[bool, typer.Option(
            help="Fail (exit 2) when a section cannot be drawn or a results file cannot be "
                 "read, instead of noting it in the page.")
        ] = False,
    ) -> None:
        """Write the self-contained HTML report of RUN_DIR from its results (recomputes
        nothing) and print its path."""
        from deepprofile.report.page import build_report

        path = build_report(run_dir, output, title=title, strict=strict)
        typer.echo(str(path))

    @app.command("compare")
    def compare(
        run_a: Annotated[Path, typer.Argument(help="First run folder (A).")],
        run_b: Annotated[Path, typer.Argument(help="Second run folder (B), same layers and "
                                                   "images.")],
        out_dir: Annotated[Path | None, typer.Option(
            "--out", help="Comparison folder for results/compare.json and the report "
                          "(default: compare_<A>_vs_<B> beside run A).")] = None,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="HTML report to write (default: OUT/report.html).")] = None,
        layer: Annotated[list[str] | None, typer.Option(
            "--layer", "-l", help="Compare only these layers (repeat); default: the common "
                                  "layers.")] = None,
        n_points: Annotated[int, typer.Option(help="Points per topology cloud.")] = 500,
        k: Annotated[int, typer.Option(
            "-k", help="Top singular vectors per layer for the principal angles.")] = 8,
        no_topology: Annotated[bool, typer.Option("--no-topology",
                                                  help="Skip the topology part.")] = False,
        no_mapper: Annotated[bool, typer.Option("--no-mapper",
                                                help="Skip the mapper part.")] = False,
        no_spectral: Annotated[bool, typer.Option("--no-spectral",
                                                  help="Skip the weight part.")] = False,
        seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """Compare two runs (two seeds, before/after fine-tuning): topology and CKA layer
        matching, mapper graph distances, weight spectra and principal angles; writes
        OUT/results/compare.json and a comparison report, and prints the report's path."""
        from deepprofile.compare import compare_runs, summarize_comparison
        from deepprofile.report.page import build_comparison_report

        folder = out_dir or run_a.parent / f"compare_{run_a.name}_vs_{run_b.name}"
        result = compare_runs(run_a, run_b, folder, quiet=quiet, layers=layer or None,
                              n_points=n_points, seed=seed, k=k, topology=not no_topology,
                              mapper=not no_mapper, spectral=not no_spectral)
        if not quiet:
            typer.echo(summarize_comparison(result), err=True)
        path = build_comparison_report(folder, output)
        typer.echo(str(path))
