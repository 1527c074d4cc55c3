"""``deepprofile mapper``: interactive mapper graphs of stored layers.

Heavy imports (kmapper, scikit-learn, POT) happen inside the command so that
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from deepprofile import cliparams as cp


def register(app: typer.Typer) -> None:
    """Add the ``mapper`` command to the main app."""

    @app.command("mapper")
    def mapper(
        path: Annotated[Path, typer.Argument(help="Run folder (or its activations.zarr store).")],
        layer: Annotated[
            list[str] | None,
            typer.Option(
                "--layer", "-l",
                help="Layer name or glob; repeat for several. Default: every stored layer.",
            ),
        ] = None,
        lens: Annotated[
            Literal["l2norm", "pca", "pca2", "confidence", "entropy", "centroid"],
            typer.Option(help="l2norm, pca, pca2, confidence, entropy or centroid.")
        ] = "l2norm",
        intervals: Annotated[int, typer.Option(
            parser=cp.rule("mapper", "intervals"),
            help="Cover intervals per lens dimension.")] = 40,
        overlap: Annotated[
            float, typer.Option(parser=cp.rule("mapper", "overlap"),
                                help="Overlap of neighbouring intervals, in [0, 1).")
        ] = 0.3,
        eps: Annotated[
            float | None,
            typer.Option(parser=cp.rule("mapper", "eps"),
                         help="DBSCAN eps; default: knee of the sorted k-NN distances."),
        ] = None,
        min_samples: Annotated[int, typer.Option(
            parser=cp.rule("mapper", "min_samples"), help="DBSCAN min_samples.")] = 5,
        thumbnails: Annotated[
            bool,
            typer.Option("--thumbnails/--no-thumbnails", help="Member images in node details."),
        ] = True,
        open_page: Annotated[
            bool, typer.Option("--open", help="Open the page(s) in a browser.")
        ] = False,
        seed: Annotated[int, typer.Option(
            parser=cp.rule("mapper", "seed"),
            help="Seed for subsampling, PCA and clusterers.")] = 0,
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
        ] = False,
        scheduler: Annotated[
            str | None, typer.Option(parser=cp.scheduler, help=cp.SCHEDULER_HELP)
        ] = None,
    ) -> None:
        """Build mapper graphs: RUN_DIR/mapper/<layer>.html and RUN_DIR/results/mapper.json."""
        from deepprofile.mapper.pipeline import (
            resolve_run_dir,
            run_mapper,
            summarize_mapper,
        )

        result = run_mapper(
            path, layers=layer or None, seed=seed, quiet=quiet, lens=lens,
            intervals=intervals, overlap=overlap, eps=eps, min_samples=min_samples,
            thumbnails=thumbnails, scheduler=scheduler,
        )
        rd, _ = resolve_run_dir(path)
        names = _selected(result, layer) if layer else list(result.pages)
        written = [rd.path / result.pages[name] for name in names]
        if not quiet:
            typer.echo(summarize_mapper(result))
            typer.echo(f"Wrote {rd.result_path('mapper')}")
            for page in written:
                typer.echo(f"Wrote {page} ({_size(page.stat().st_size)})")
        if open_page:
            for page in written:
                if not _open(page):
                    typer.echo(f"No web browser available to open {page}; open it by hand "
                               "or copy it to a machine with one.", err=True)
                    break


def _size(n_bytes: int) -> str:
    """A file size as people read it (kB and MB of 1000 bytes)."""
    if n_bytes >= 1_000_000:
        return f"{n_bytes / 1e6:.1f} MB"
    return f"{n_bytes / 1e3:.0f} kB" if n_bytes >= 1000 else f"{n_bytes} B"


def _open(page: Path) -> bool:
    """Open ``page`` in a browser; ``False`` when Python finds none to run (webbrowser
    then does nothing and says nothing)."""
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return bool(webbrowser.open(page.resolve().as_uri()))


def _selected(result: object, selectors: list[str]) -> list[str]:
    import fnmatch

    return [
        name for name in result.pages
        if any(name == s or fnmatch.fnmatchcase(name, s) for s in selectors)
    ]
