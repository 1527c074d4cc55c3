"""``deepprofile attribute RUN_DIR``: attributions, SDE smoothing, BIG, robustness.

Heavy imports (torch models, captum) happen inside the command so that
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from deepprofile import cliparams as cp

#: Settings of each preset; an option given on the command line overrides its preset value.
PRESETS: dict[str, dict[str, object]] = {
    "quick": {"n_images": 4, "n_steps": 8, "n_draws": 4, "sde_sigma": [0.1],
              "robust_images": 2, "robustness": False, "big": False, "alignment": True,
              "accuracy_images": 32},
    "standard": {"n_images": 16, "n_steps": 16, "n_draws": 8, "sde_sigma": [0.1, 0.3],
                 "robust_images": 8, "robustness": True, "big": True, "alignment": True,
                 "accuracy_images": 256},
    "full": {"n_images": 32, "n_steps": 32, "n_draws": 16, "sde_sigma": [0.05, 0.1, 0.3],
             "robust_images": 16, "robustness": True, "big": True, "alignment": True,
             "accuracy_images": 512},
}


def _pick(given: object, preset: str, key: str) -> object:
    return PRESETS[preset][key] if given is None else given


def register(app: typer.Typer) -> None:
    """Add the ``attribute`` command to the main app."""

    @app.command("attribute")
    def attribute_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with run.json and the store).")],
        preset: Annotated[Literal["quick", "standard", "full"], typer.Option(
            help="quick: 4 images, 8 IG steps, 4 draws at sigma 0.1, no robustness or BIG "
                 "(minutes on a ResNet-50 on a CPU); standard: 16 images with every stage; "
                 "full: 32 images, more steps and draws. Options below override it.")
        ] = "standard",
        method: Annotated[Literal[
            "ig", "integrated_gradients", "saliency", "input_x_gradient", "smoothgrad",
            "gradient_shap"], typer.Option(
            help="Base method, SDE-smoothed and compared: ig, saliency, input_x_gradient, "
            "smoothgrad, gradient_shap.")] = "ig",
        sde_sigma: Annotated[list[float] | None, typer.Option(
            "--sde-sigma", parser=cp.rule("attribution", "sigmas"),
            help="Diffusion sigma (>= 0) of the SDE smoothing; repeat for several "
            "(0 = plain, always included).")] = None,
        n_draws: Annotated[int | None, typer.Option(
            parser=cp.rule("attribution", "n_draws"),
            help="Noise draws averaged per sigma.")] = None,
        noise: Annotated[Literal["additive", "multiplicative"], typer.Option(
            help="additive or multiplicative noise.")] = "additive",
        n_images: Annotated[int | None, typer.Option(
            parser=cp.rule("attribution", "n_images"),
            help="Images explained (spread over the store).")] = None,
        n_steps: Annotated[int | None, typer.Option(
            parser=cp.rule("attribution", "n_steps"),
            help="Integration steps of IG / BIG.")] = None,
        robust_images: Annotated[int | None, typer.Option(
            parser=cp.rule("attribution", "robust_images"),
            help="Images used in the robustness comparison.")] = None,
        eps: Annotated[float | None, typer.Option(
            parser=cp.rule("attribution", "eps"),
            help="Perturbation radius (Linf) of the robustness checks; default 3% of the "
            "input range.")] = None,
        robustness: Annotated[bool | None, typer.Option(
            "--robustness/--no-robustness",
            help="Compare the methods' robustness (the costliest stage).")] = None,
        big: Annotated[bool | None, typer.Option(
            "--big/--no-big", help="Boundary IG (PGD search for a decision boundary).")] = None,
        alignment: Annotated[bool | None, typer.Option(
            "--alignment/--no-alignment",
            help="Score the maps' alignment with the data manifold.")] = None,
        finetune_steps: Annotated[int, typer.Option(
            parser=cp.rule("attribution", "finetune_steps"),
            help="Noisy fine-tuning steps (neural-SDE training) on the training split; 0 = off."
        )] = 0,
        finetune_sigma: Annotated[float | None, typer.Option(
            parser=cp.rule("attribution", "finetune_sigma"),
            help="Sigma of the noisy fine-tuning (default: the largest --sde-sigma).")] = None,
        node_members: Annotated[Path | None, typer.Option(
            help="JSON file {node id: [store rows]} of a mapper graph, for per-node maps.")] = None,
        node_layer: Annotated[str | None, typer.Option(
            help="Layer of the mapper graph; without --node-members its nodes are read from "
            "results/mapper.json.")] = None,
        alignment_layer: Annotated[str | None, typer.Option(
            help="Also score manifold alignment in this layer's activation space.")] = None,
        arch: Annotated[str | None, typer.Option(
            help="Architecture of the run's weights file (default: from run.json).")] = None,
        num_classes: Annotated[int | None, typer.Option(
            parser=cp.integer(1),
            help="Classes of the model head (default: from run.json).")] = None,
        device: Annotated[str, typer.Option(
            parser=cp.device, help="auto (CUDA when available), cpu, cuda.")] = "auto",
        memory_budget: Annotated[str, typer.Option(
            help="Activation memory one forward-backward pass may use, e.g. 2GB, 8GiB, "
            "or 'none' (no bound); sets captum's internal batch sizes.")] = "2GiB",
        seed: Annotated[int, typer.Option(
            parser=cp.rule("attribution", "seed"), help="Seed for every random choice.")] = 0,
        scheduler: Annotated[str | None, typer.Option(
            parser=cp.scheduler,
            help="Compute the maps as Dask tasks, one per shard of images: local:N (N worker "
            "processes on this machine) or tcp://HOST:PORT (a running scheduler; the run "
            "folder must be at the same path on every worker). Needs '.[dask]'.")] = None,
        shard_size: Annotated[int, typer.Option(
            parser=cp.rule("attribution", "shard_size"),
            help="Images per shard: the unit of resuming and of Dask tasks.")] = 8,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        """Attribute a run's images: captum methods, SDE smoothing, BIG, robustness, alignment.

        Writes maps to RUN_DIR/attribution.zarr, shard by shard (a killed run resumes with
        the shards not done; a finished one is reused when the settings are unchanged), and
        the summary to RUN_DIR/results/attribution.json. Without a terminal, one progress
        line per stage (elapsed and estimated time left) goes to stderr.
        """
        from threadpoolctl import threadpool_limits

        from deepprofile.attribution.memory import parse_budget
        from deepprofile.attribution.pipeline import (
            load_run_inputs,
            node_members_from_mapper,
            run_attribution,
            summarize_attribution,
        )
        from deepprofile.errors import DeepProfileError
        from deepprofile.results import read_json

        parse_budget(memory_budget)  # a bad size fails before the model loads
        cp.run_folder(run_dir)
        if node_members is not None and not node_members.is_file():
            raise DeepProfileError(f"--node-members {node_members} is not a file.")
        model, info, dataset, train_dataset = load_run_inputs(
            run_dir, device=device, need_train=finetune_steps > 0, arch=arch,
            num_classes=num_classes)
        members = None
        if node_members is not None:
            raw = read_json(node_members)
            try:
                members = {str(k): [int(r) for r in v] for k, v in dict(raw).items()}
            except (TypeError, ValueError):
                raise DeepProfileError(
                    f"--node-members {node_members} must map node ids to lists of store "
                    "rows (integers).") from None
        elif node_layer is not None:
            members = node_members_from_mapper(run_dir, node_layer)
        chosen = _pick(sde_sigma or None, preset, "sde_sigma")
        sigmas = (0.0, *sorted({float(s) for s in chosen if s > 0}))
        # numpy's OpenBLAS threads inside torch's OpenMP regions print "Detect OpenMP Loop"
        # warnings by the thousand and compete for the cores: keep BLAS single-threaded here.
        with threadpool_limits(limits=1, user_api="blas"):
            result = run_attribution(
                model, run_dir, dataset, n_images=_pick(n_images, preset, "n_images"),
                sigmas=sigmas, n_draws=_pick(n_draws, preset, "n_draws"), seed=seed,
                quiet=quiet, method=method, n_steps=_pick(n_steps, preset, "n_steps"),
                noise_mode=noise, robust_images=_pick(robust_images, preset, "robust_images"),
                eps=eps, node_members=members, node_layer=node_layer,
                alignment_layer=alignment_layer, train_dataset=train_dataset,
                finetune_steps=finetune_steps, finetune_sigma=finetune_sigma, model_info=info,
                accuracy_images=PRESETS[preset]["accuracy_images"],
                robustness=_pick(robustness, preset, "robustness"),
                boundary=_pick(big, preset, "big"),
                alignment=_pick(alignment, preset, "alignment"),
                memory_budget=memory_budget, scheduler=scheduler, shard_size=shard_size,
            )
        if not quiet:
            typer.echo(summarize_attribution(result))
