"""``deepprofile spectral``: SVD and random-matrix figures of a model's weights, projections and
class hypergraphs from a store or run folder, written as JSON.

Registered on the main app by ``register(app)``; heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from deepprofile import cliparams as cp


def register(app: typer.Typer) -> None:
    """Add the ``spectral`` command to the deepprofile app."""

    @app.command("spectral")
    def spectral(
        model: Annotated[str, typer.Argument(
            help="Checkpoint path or registered architecture name (random init).")],
        layers: Annotated[list[str] | None, typer.Option(
            "--layers", "-l",
            help="Layers to project on (module paths or globs; a block stands for its last "
                 "spatial conv). Repeat the option. Default: up to 4 convs spread over depth.",
        )] = None,
        weight_layers: Annotated[list[str] | None, typer.Option(
            "--weight-layers", help="Restrict the weight (SVD/RMT) analysis to these layers; "
                                    "default: every Conv/Linear layer.")] = None,
        store: Annotated[Path | None, typer.Option(
            help="Activation store to take projections from (flatten layers directly, others "
                 "by re-running its dataset).")] = None,
        run: Annotated[Path | None, typer.Option(
            "--run", help="Run folder: uses its store; writes RUN/results/spectral.json.")] = None,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="JSON file to write (default: RUN/results/spectral.json, "
                                   "or ./spectral.json without a run).")] = None,
        threshold: Annotated[float, typer.Option(
            parser=cp.rule("spectral", "threshold"),
            help="Influence threshold (cumulative energy share, or per-vector share).")] = 0.8,
        mode: Annotated[Literal["cumulative", "share"],
                        typer.Option(help="cumulative | share")] = "cumulative",
        n_vectors: Annotated[int | None, typer.Option(
            parser=cp.rule("spectral", "n_vectors"),
            help="Top singular vectors per layer to consider (default: all).")] = None,
        max_layers: Annotated[int, typer.Option(
            parser=cp.rule("spectral", "max_projection_layers"),
            help="Projection layers picked when --layers is not given.")] = 4,
        random_init: Annotated[bool, typer.Option(
            "--random-init/--no-random-init",
            help="Also analyse a seeded random-init copy side by side.")] = True,
        bootstrap: Annotated[int, typer.Option(
            parser=cp.rule("spectral", "n_bootstrap"),
            help="Bootstrap samples for the power-law goodness-of-fit p-value (0: off).")] = 0,
        arch: Annotated[str | None, typer.Option(
            help="Architecture of a plain weights file (default: from the checkpoint, or "
                 "the run.json of --run).")] = None,
        num_classes: Annotated[int | None, typer.Option(
            parser=cp.integer(1),
            help="Classes of the model head (default: read from the weights).")] = None,
        batch_size: Annotated[int, typer.Option(
            parser=cp.rule("spectral", "batch_size"), help="Images per forward pass.")] = 128,
        device: Annotated[str, typer.Option(
            parser=cp.device, help="auto (CUDA when available), cpu, cuda, cuda:1 ...")] = "auto",
        seed: Annotated[int, typer.Option(
            parser=cp.rule("spectral", "seed"), help="Seed for every random choice.")] = 0,
        scheduler: Annotated[str | None, typer.Option(
            parser=cp.scheduler, help=cp.SCHEDULER_HELP + " Same spectral.json as without."
        )] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """SVD + random-matrix analysis of every Conv/Linear layer (trained vs random init);
        with --store/--run, projections on singular vectors and class hypergraphs."""
        from rich.console import Console

        from deepprofile.errors import DeepProfileError
        from deepprofile.models import load_model, resolve_device
        from deepprofile.partial import LayerResults
        from deepprofile.results import write_json
        from deepprofile.rundir import RunDir
        from deepprofile.spectral.pipeline import run_spectral, summarize_spectral

        console = Console(stderr=True)
        if store is not None and run is not None:
            raise DeepProfileError("Give either --store or --run, not both.")
        dev = resolve_device(device)
        if run is not None:
            cp.run_folder(run)
        if output is not None:
            cp.output_folder(output.parent, "--output's folder")
        arch_kwargs = None
        if run is not None and arch is None:
            from deepprofile.models import run_model_spec

            recorded = run_model_spec(run)
            same = (recorded["checkpoint"]
                    and Path(recorded["checkpoint"]).resolve() == Path(model).resolve())
            if same:
                arch = recorded["arch"]
                num_classes = num_classes or recorded["num_classes"]
                arch_kwargs = dict(recorded["arch_kwargs"])
        net, info = load_model(model, num_classes=num_classes, device=dev, arch=arch,
                               arch_kwargs=arch_kwargs)
        opened = None
        if run is not None:
            run_dir = RunDir(run)
            if not run_dir.store_path.exists():
                from deepprofile.errors import MissingFileError

                raise MissingFileError(
                    f"{run} has no activation store ({run_dir.store_path}); run "
                    "`deepprofile capture` first.")
            opened = run_dir.store()
            target = output or run_dir.result_path("spectral")
        elif store is not None:
            from deepprofile.capture.store import ActivationStore

            opened = ActivationStore.open(store)
            target = output or Path("spectral.json")
        else:
            target = output or Path("spectral.json")
        if opened is not None:
            stored_hash = opened.metadata.get("weights_hash")
            if stored_hash and stored_hash != info.weights_hash:
                console.print(
                    f"[yellow]warning:[/] the store was captured with weights {stored_hash}, "
                    f"the model given has {info.weights_hash}; projections use the given model."
                )
        # finished layers wait in .partial/ beside the output, so a killed run resumes
        saved = LayerResults.in_results(Path(target).parent, "spectral")
        result = run_spectral(
            net, None, None, layers or None, seed=seed, quiet=quiet,
            weight_layers=weight_layers or None, threshold=threshold, mode=mode,
            n_vectors=n_vectors, max_projection_layers=max_layers,
            compare_random_init=random_init, n_bootstrap=bootstrap, batch_size=batch_size,
            device=dev, model_info=info.to_dict(), store=opened, scheduler=scheduler,
            saved=saved,
        )
        write_json(target, result.to_dict())
        saved.finish(quiet)
        if not quiet:
            typer.echo(summarize_spectral(result))
        typer.echo(f"wrote {target}")
