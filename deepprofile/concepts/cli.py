"""``deepprofile concepts RUN_DIR``: concept probes per layer, controls, TCAV, structure links.

Heavy imports happen inside the command so that ``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def build_concept_set(run_dir: Path, specs: list[str], negatives: Path | None,
                      store_name: str, shapes: bool | None):
    """The run's concept set: ``--concept`` values plus, on shapes runs, the ground truth."""
    from deepprofile.capture.store import ActivationStore
    from deepprofile.concepts.sets import empty_set, parse_concept_spec, shapes_concepts

    store = ActivationStore.open(Path(run_dir) / store_name)
    is_shapes = (store.metadata.get("dataset") or {}).get("name") == "shapes"
    concepts = empty_set(store.n_samples)
    if shapes or (shapes is None and is_shapes and not specs):
        concepts = concepts.merge(shapes_concepts(store))
    for spec in specs:
        concepts = concepts.merge(parse_concept_spec(
            spec, labels=store.labels, class_names=store.metadata.get("class_names"),
            negatives=negatives))
    return concepts


def register(app: typer.Typer) -> None:
    """Add the ``concepts`` command to the main app."""

    @app.command("concepts")
    def concepts_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with run.json and the store).")],
        concept: Annotated[list[str] | None, typer.Option(
            "--concept", "-c", help="NAME=DIR (a folder of positive images) or NAME=cls1,cls2 "
            "(a group of classes); repeat for several.")] = None,
        negatives: Annotated[Path | None, typer.Option(
            help="Folder of negative images for folder concepts (default: the run's images)."
        )] = None,
        shapes: Annotated[bool | None, typer.Option(
            "--shapes/--no-shapes", help="Include the shapes dataset's ground-truth concepts "
            "(default: on shapes runs when no --concept is given).")] = None,
        store_name: Annotated[str, typer.Option(help="Store inside the run.")] = (
            "activations.zarr"),
        layer: Annotated[list[str] | None, typer.Option(
            "--layer", "-l", help="Stored layers to probe (default: all).")] = None,
        tcav: Annotated[bool, typer.Option("--tcav/--no-tcav", help="Run TCAV.")] = True,
        tcav_concept: Annotated[list[str] | None, typer.Option(
            "--tcav-concept", help="Concepts given to TCAV (default: all).")] = None,
        n_random: Annotated[int, typer.Option(
            help="Random counter-concepts of the TCAV t-test (>= 10 recommended).")] = 10,
        baseline: Annotated[bool, typer.Option(
            "--baseline/--no-baseline", help="Random-init model control.")] = True,
        links: Annotated[bool, typer.Option(
            "--links/--no-links", help="Tie each concept to the mapper graphs, topology, "
            "spectra and attributions of the run.")] = True,
        margin: Annotated[float, typer.Option(
            help="Decodable: accuracy above the shuffled control by this much (and the first "
            "layer within it of the best).")] = 0.05,
        device: Annotated[str, typer.Option(
            help="auto (CUDA when available), cpu, cuda.")] = "auto",
        seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Which layer knows which concept: probes with controls, sparsity, TCAV.

        Writes RUN_DIR/concepts/ (concept set, probes) and RUN_DIR/results/concepts.json.
        """
        from deepprofile.concepts.pipeline import run_concepts, summarize_concepts
        from deepprofile.models import resolve_device

        concepts = build_concept_set(run_dir, list(concept or []), negatives, store_name, shapes)
        result = run_concepts(
            run_dir, concepts, store_name=store_name, layers=layer or None, baseline=baseline,
            tcav=tcav, tcav_concepts=tcav_concept or None, n_random=n_random, margin=margin,
            links=links,
            device=str(resolve_device(device)), seed=seed, quiet=quiet,
            echo=None if quiet else typer.echo)
        if not quiet:
            typer.echo(summarize_concepts(result))
