"""``deepprofile data-attribution RUN_DIR``: TRAK scores of a run's predictions and concepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deepprofile import cliparams as cp


def register(app: typer.Typer) -> None:
    """Add the ``data-attribution`` command to the main app."""

    @app.command("data-attribution")
    def data_attribution_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with run.json and the store).")],
        train_data: Annotated[str | None, typer.Option(
            help="Training set of the checkpoints: digits, shapes or folder (default: the one "
            "recorded in the checkpoints).")] = None,
        train_root: Annotated[Path | None, typer.Option(
            help="Image folder for --train-data folder.")] = None,
        target: Annotated[list[str] | None, typer.Option(
            "--target", help="predictions, concept:NAME or shortcut:CONCEPT:CLASS (does the "
            "model use CONCEPT for CLASS? needs training-set ground truth, e.g. shapes: "
            "shortcut:marker:circle); repeat for several.")] = None,
        checkpoint: Annotated[list[Path] | None, typer.Option(
            "--checkpoint", help="Checkpoint files (default: the model folder's "
            "checkpoints/epoch_*.pt); repeat for several.")] = None,
        extra_models: Annotated[list[Path] | None, typer.Option(
            "--extra-models", help="Model folder of another seed trained on the same data; "
            "its checkpoints join the ensemble.")] = None,
        concept_layer: Annotated[str | None, typer.Option(
            help="Layer of the concept probe (default: its most accurate one).")] = None,
        proj_dim: Annotated[int | None, typer.Option(
            parser=cp.rule("data_attribution", "proj_dim"),
            help="Projection dimension (default min(512, n_train/2)); below n_train.")] = None,
        lambda_reg: Annotated[float, typer.Option(
            parser=cp.rule("data_attribution", "lambda_reg"),
            help="Absolute ridge term on X^T X.")] = 0.0,
        ridge: Annotated[float, typer.Option(
            parser=cp.rule("data_attribution", "ridge"),
            help="Ridge on X^T X relative to its mean eigenvalue "
            "(0: traker's scores exactly).")] = 1.0,
        n_targets: Annotated[int, typer.Option(
            parser=cp.rule("data_attribution", "n_targets"),
            help="Test images scored (spread).")] = 64,
        k: Annotated[int, typer.Option(
            parser=cp.rule("data_attribution", "k"),
            help="Training images kept per ranking.")] = 8,
        batch_size: Annotated[int, typer.Option(
            parser=cp.rule("data_attribution", "batch_size"),
            help="Per-sample gradient batch.")] = 32,
        seed: Annotated[int, typer.Option(
            parser=cp.rule("data_attribution", "projector_seed"), help="Projector seed.")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
        scheduler: Annotated[str | None, typer.Option(
            parser=cp.scheduler, help="Featurise the training set as Dask tasks (one per "
            "checkpoint and range of training samples): local:N (N worker processes here) "
            "or tcp://HOST:PORT (a running scheduler); scoring runs here. Needs "
            "'.[dask]'.")] = None,
        memory_budget: Annotated[str, typer.Option(
            help="Memory one per-sample-gradient pass may use (parameter gradients and "
            "activations), e.g. 2GB, 8GiB, or 'none' (no bound); large models then run "
            "each batch in several passes.")] = "2GiB",
    ) -> None:
        """Which training images taught the model this? TRAK over the training checkpoints.

        Writes RUN_DIR/results/data_attribution.json, score matrices under
        RUN_DIR/data_attribution/ and resumable features in RUN_DIR/data_attribution.zarr.
        """
        from deepprofile.data import load_dataset
        from deepprofile.data_attribution.pipeline import (
            run_data_attribution,
            summarize_data_attribution,
        )
        from deepprofile.models import resolve_device

        train_set = None
        if train_data is not None:
            params = {"root": train_root} if train_data == "folder" else {}
            train_set = load_dataset(train_data, split="train", **params)
        result = run_data_attribution(
            run_dir, train_set=train_set, targets=target or ["predictions"],
            checkpoints=checkpoint, extra_model_dirs=extra_models or (),
            concept_layer=concept_layer, proj_dim=proj_dim, projector_seed=seed,
            lambda_reg=lambda_reg, ridge=ridge, n_targets=n_targets, k=k, batch_size=batch_size,
            device=resolve_device(device), quiet=quiet, scheduler=scheduler,
            memory_budget=memory_budget)
        typer.echo(summarize_data_attribution(result))
