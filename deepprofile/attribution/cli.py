"""``deepprofile attribute RUN_DIR``: attributions, SDE smoothing, BIG, robustness.

Heavy imports (torch models, captum) happen inside the command so that
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``attribute`` command to the main app."""

    @app.command("attribute")
    def attribute_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with run.json and the store).")],
        method: Annotated[str, typer.Option(
            help="Base method, SDE-smoothed and compared: ig, saliency, input_x_gradient, "
            "smoothgrad, gradient_shap.")] = "ig",
        sde_sigma: Annotated[list[float] | None, typer.Option(
            "--sde-sigma", help="Diffusion sigma of the SDE smoothing; repeat for several "
            "(0 = plain, always included).")] = None,
        n_draws: Annotated[int, typer.Option(help="Noise draws averaged per sigma.")] = 8,
        noise: Annotated[str, typer.Option(help="additive or multiplicative noise.")] = "additive",
        n_images: Annotated[int, typer.Option(
            help="Images explained (spread over the store).")] = 16,
        n_steps: Annotated[int, typer.Option(help="Integration steps of IG / BIG.")] = 16,
        robust_images: Annotated[int, typer.Option(
            help="Images used in the robustness comparison.")] = 8,
        eps: Annotated[float | None, typer.Option(
            help="Perturbation radius (Linf) of the robustness checks; default 3% of the "
            "input range.")] = None,
        finetune_steps: Annotated[int, typer.Option(
            help="Noisy fine-tuning steps (neural-SDE training) on the training split; 0 = off."
        )] = 0,
        finetune_sigma: Annotated[float | None, typer.Option(
            help="Sigma of the noisy fine-tuning (default: the largest --sde-sigma).")] = None,
        node_members: Annotated[Path | None, typer.Option(
            help="JSON file {node id: [store rows]} of a mapper graph, for per-node maps.")] = None,
        node_layer: Annotated[str | None, typer.Option(
            help="Layer of the mapper graph; without --node-members its nodes are read from "
            "results/mapper.json.")] = None,
        alignment_layer: Annotated[str | None, typer.Option(
            help="Also score manifold alignment in this layer's activation space.")] = None,
        device: Annotated[str, typer.Option(
            help="auto (CUDA when available), cpu, cuda.")] = "auto",
        memory_budget: Annotated[str, typer.Option(
            help="Activation memory one forward-backward pass may use, e.g. 2GB, 8GiB, "
            "or 'none' (no bound); sets captum's internal batch sizes.")] = "2GiB",
        seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """Attribute a run's images: captum methods, SDE smoothing, BIG, robustness, alignment.

        Writes maps under RUN_DIR/attribution/ and the summary to
        RUN_DIR/results/attribution.json.
        """
        from deepprofile.attribution.pipeline import (
            load_run_inputs,
            node_members_from_mapper,
            run_attribution,
            summarize_attribution,
        )
        from deepprofile.results import read_json

        model, info, dataset, train_dataset = load_run_inputs(
            run_dir, device=device, need_train=finetune_steps > 0)
        members = None
        if node_members is not None:
            raw = read_json(node_members)
            members = {str(k): [int(r) for r in v] for k, v in dict(raw).items()}
        elif node_layer is not None:
            members = node_members_from_mapper(run_dir, node_layer)
        sigmas = (0.0, *sorted({float(s) for s in (sde_sigma or [0.1, 0.3]) if s > 0}))
        result = run_attribution(
            model, run_dir, dataset, n_images=n_images, sigmas=sigmas, n_draws=n_draws,
            seed=seed, quiet=quiet, method=method, n_steps=n_steps, noise_mode=noise,
            robust_images=robust_images, eps=eps, node_members=members, node_layer=node_layer,
            alignment_layer=alignment_layer, train_dataset=train_dataset,
            finetune_steps=finetune_steps, finetune_sigma=finetune_sigma,
            model_info=info, memory_budget=memory_budget,
        )
        if not quiet:
            typer.echo(summarize_attribution(result))
