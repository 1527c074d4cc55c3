"""``deepprofile topology``: persistence, layer x layer distances, CKA and matching tests.

Heavy imports (giotto-ph, giotto-tda, POT) happen inside the command so that
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from deepprofile import cliparams as cp


def register(app: typer.Typer) -> None:
    """Add the ``topology`` command to the main app."""

    @app.command("topology")
    def topology(
        sources: Annotated[
            list[Path],
            typer.Argument(help="Run folder or activation store; two of them with --compare."),
        ],
        compare: Annotated[
            bool, typer.Option("--compare", help="Compare the layers of two runs/stores.")
        ] = False,
        layers: Annotated[
            list[str] | None,
            typer.Option("--layers", "-l", help="Layer name or glob; repeat for several. "
                         "Default: every stored layer the cloud kind can use."),
        ] = None,
        cloud: Annotated[
            Literal["max_position", "image", "positions"],
            typer.Option(help="Point cloud per layer: max_position, image or positions.")
        ] = "max_position",
        n_points: Annotated[int, typer.Option(
            parser=cp.rule("topology", "n_points"),
            help="Points per cloud after subsampling.")] = 1000,
        sampler: Annotated[Literal["random", "stratified", "fps"],
                           typer.Option(help="random, stratified or fps.")] = "random",
        normalize: Annotated[
            Literal["median", "standardize", "none"],
            typer.Option(help="median (unit median pairwise distance), standardize, none.")
        ] = "median",
        metric: Annotated[
            list[str] | None,
            typer.Option("--metric", "-m", parser=cp.one_of(
                "sliced_wasserstein", "wasserstein", "bottleneck", "landscape"),
                help="sliced_wasserstein, wasserstein, bottleneck, landscape; repeat for "
                     "several (first is the headline). Default: all."),
        ] = None,
        homology: Annotated[
            list[int] | None,
            typer.Option("--homology", parser=cp.rule("topology", "homology"),
                         help="Homology dimensions 0-3; repeat (default 0 and 1)."),
        ] = None,
        cutoff_quantile: Annotated[
            float | None,
            typer.Option(parser=cp.rule("topology", "cutoff_quantile"),
                         help="Rips cutoff at this quantile of pairwise distances (faster; "
                         "features alive at the cutoff get death = cutoff)."),
        ] = None,
        positions_k: Annotated[
            int, typer.Option(parser=cp.rule("topology", "positions_k"),
                              help="Positions per image for --cloud positions.")
        ] = 16,
        store: Annotated[
            Path | None, typer.Option(help="Read this store instead of the run's stores.")
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(help="JSON output (default RUN_DIR/results/topology.json, or "
                         "A/results/topology_compare.json with --compare)."),
        ] = None,
        threads: Annotated[int, typer.Option(
            parser=cp.rule("topology", "n_threads"),
            help="Threads inside one persistence run.")] = 2,
        device: Annotated[
            str, typer.Option(parser=cp.device,
                              help="auto|cpu|cuda (unused: topology runs on the CPU).")
        ] = "auto",
        seed: Annotated[int, typer.Option(parser=cp.rule("topology", "seed"),
                                          help="Seed for subsampling.")] = 0,
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")
        ] = False,
        scheduler: Annotated[
            str | None, typer.Option(parser=cp.scheduler, help=cp.SCHEDULER_HELP)
        ] = None,
    ) -> None:
        """Persistent homology of layer clouds: RUN_DIR/results/topology.json."""
        from deepprofile.errors import DeepProfileError
        from deepprofile.partial import LayerResults
        from deepprofile.results import write_json
        from deepprofile.topology.distances import METRICS
        from deepprofile.topology.pipeline import (
            COMPARE_NAME,
            RESULT_NAME,
            TopologyAnalysis,
            _results_dir,
            summarize_topology,
        )

        del device  # accepted for a uniform CLI; persistence has no GPU path here
        params = dict(
            cloud=cloud, n_points=n_points, sampler=sampler, normalize=normalize, seed=seed,
            positions_k=positions_k, homology=tuple(homology or (0, 1)),
            metrics=tuple(metric or METRICS), cutoff_quantile=cutoff_quantile,
            n_threads=threads, quiet=quiet, scheduler=scheduler,
        )
        saved = None
        if compare:
            if len(sources) != 2:
                raise DeepProfileError("--compare needs exactly two runs or stores: A B.")
            analysis = TopologyAnalysis(layers or None, cka=("linear",), sensitivity_k=(),
                                        **params)
            result = analysis.compare(sources[0], sources[1])
            path = out or _results_dir(sources[0]) / f"{COMPARE_NAME}.json"
        else:
            if len(sources) != 1:
                raise DeepProfileError(
                    "Give one run folder or store (or two with --compare)."
                )
            analysis = TopologyAnalysis(layers or None, **params)
            path = out or _results_dir(sources[0]) / f"{RESULT_NAME}.json"
            # finished layers wait in .partial/ beside the output, so a killed run resumes
            saved = LayerResults.in_results(Path(path).parent, RESULT_NAME)
            result = analysis.fit(store if store is not None else sources[0],
                                  saved=saved).result_
        write_json(path, result)
        if saved is not None:
            saved.finish(quiet)
        if not quiet:
            typer.echo(summarize_topology(result))
            typer.echo(f"Wrote {path}")
