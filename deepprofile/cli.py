"""The ``deepprofile`` command line (typer): layers, train, capture, demo and the analyses.

Analysis subpackages add their own commands through ``register(app)`` functions
listed in ``_COMMAND_MODULES``; their heavy imports happen inside the commands so
``deepprofile --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import deepprofile
from deepprofile.errors import DeepProfileError

app = typer.Typer(
    name="deepprofile",
    help="Open up trained image classifiers: capture activations, study their topology, "
    "mapper graphs and weight spectra, attributions, and write HTML reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:1 ...")]
Seed = Annotated[int, typer.Option(help="Seed for every random choice of the run.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"deepprofile {deepprofile.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """deepprofile command line."""


@app.command()
def layers(
    model: Annotated[str, typer.Argument(help="Architecture name or checkpoint path.")],
    input_size: Annotated[tuple[int, int, int], typer.Option(
        help="Input shape C H W used to compute output shapes.")] = (3, 224, 224),
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain weights file.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes of the model head.")] = None,
    filter: Annotated[str | None, typer.Option(
        "--filter", help="Only module paths matching this glob (e.g. 'layer*.*.conv*').")] = None,
) -> None:
    """List selectable module paths with their output shapes for an input size."""
    from deepprofile.capture.inspect import layer_table
    from deepprofile.capture.selectors import resolve_layers
    from deepprofile.models import load_model

    net, info = load_model(model, num_classes=num_classes, arch=arch)
    rows = layer_table(net, tuple(input_size))
    keep = set(resolve_layers(net, filter)) if filter else None
    table = Table(title=f"{info.arch} ({info.source})")
    for col in ("module path", "type", "output shape", "params"):
        table.add_column(col)
    for row in rows:
        if keep is None or row.name in keep:
            shape = "not run" if row.output_shape is None else "x".join(map(str, row.output_shape))
            table.add_row(row.name, row.type, shape, f"{row.n_params:,}")
    out.print(table)


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and log.")] = Path(
        "runs/train"),
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "small_resnet",
    data: Annotated[str, typer.Option(help="digits or shapes.")] = "digits",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle SGD).")] = 0.05,
    checkpoints: Annotated[int, typer.Option(help="Checkpoints kept per run.")] = 4,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a model on a bundled dataset, keeping several checkpoints and a JSON log."""
    from deepprofile.models import resolve_device
    from deepprofile.models.train import TrainConfig
    from deepprofile.models.train import train as run_train

    in_channels = 1 if data == "digits" else 3
    kwargs = {"in_channels": in_channels} if arch == "small_resnet" else {}
    config = TrainConfig(arch=arch, arch_kwargs=kwargs, dataset=data, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed, n_checkpoints=checkpoints)
    result = run_train(config, out_dir, device=resolve_device(device), quiet=quiet)
    out.print(f"test accuracy {result.test_accuracy:.4f} after {epochs} epochs "
              f"({result.seconds:.1f} s); checkpoint {result.final_checkpoint}")


@app.command()
def capture(
    model: Annotated[str, typer.Argument(help="Checkpoint path or architecture name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path(
        "runs/capture"),
    data: Annotated[str, typer.Option(help="digits, shapes, or folder (with --data-root).")] = (
        "digits"),
    split: Annotated[str, typer.Option(help="Dataset split: train or test.")] = "test",
    data_root: Annotated[Path | None, typer.Option(help="Image folder for --data folder.")] = None,
    image_size: Annotated[int, typer.Option(help="Resize for --data folder.")] = 224,
    layer: Annotated[list[str], typer.Option("--layer", "-l", help=(
        "Module path or glob; repeat for several."))] = ["stem", "layer*"],  # noqa: B006
    reduction: Annotated[str, typer.Option(help=(
        "mean, max, max_position, flatten or positions:k."))] = "mean",
    store_name: Annotated[str, typer.Option(help="Store folder name inside the run.")] = (
        "activations.zarr"),
    limit: Annotated[int | None, typer.Option(help="Capture only the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    chunk_size: Annotated[int | None, typer.Option(help="Samples per store chunk.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain weights file.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes of the model head.")] = None,
    unsafe_load: Annotated[bool, typer.Option(help="Allow pickled checkpoints.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a store made differently.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Capture activations of LAYERs into RUN_DIR/activations.zarr (resumes if interrupted)."""
    from deepprofile.data import load_dataset
    from deepprofile.models import load_model, resolve_device
    from deepprofile.workflow import capture_run

    dev = resolve_device(device)
    net, info = load_model(model, num_classes=num_classes, device=dev, arch=arch,
                           unsafe=unsafe_load)
    params = {"root": data_root, "image_size": image_size} if data == "folder" else {}
    dataset = load_dataset(data, split=split, **params)
    indices = range(min(limit, len(dataset))) if limit else None
    run, store = capture_run(
        net, dataset, out_dir, layer, reductions=reduction, store_name=store_name,
        model_info=info.to_dict(), checkpoint=info.source if info.source != "random init" else None,
        batch_size=batch_size, chunk_size=chunk_size, device=dev, seed=seed,
        overwrite=overwrite, quiet=quiet, indices=indices,
    )
    table = Table(title=f"{store.path} ({store.n_samples} samples, accuracy {store.accuracy:.3f})")
    for col in ("layer", "output", "reduction", "stored"):
        table.add_column(col)
    for name, row in store.summary()["layers"].items():
        table.add_row(name, "x".join(map(str, row["output_shape"])), row["reduction"],
                      "x".join(map(str, row["stored_shape"])))
    out.print(table)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run configuration (.yaml/.yml or .toml).")],
    overwrite: Annotated[bool, typer.Option(help="Replace stores made differently.")] = False,
    quiet: Quiet = False,
) -> None:
    """Capture and analyse as a configuration file says (see deepprofile/config.py)."""
    from deepprofile.config import load_config, run_config

    run_config(load_config(config), quiet=quiet, overwrite=overwrite,
               echo=lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("reports/demo"),
    fast: Annotated[bool, typer.Option(help="Smaller settings (used by the tests).")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train the demo model on digits (if needed), capture, analyse and report."""
    from deepprofile.demo import run_demo
    from deepprofile.models import resolve_device

    run_demo(out_dir, fast=fast, seed=seed, device=resolve_device(device), quiet=quiet,
             echo=lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True))


_COMMAND_MODULES = (
    "deepprofile.topology.cli",
    "deepprofile.mapper.cli",
    "deepprofile.spectral.cli",
    "deepprofile.attribution.cli",
    "deepprofile.concepts.cli",
    "deepprofile.data_attribution.cli",
    "deepprofile.report.cli",
    "deepprofile.explore.cli",
)


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that analysis is not part of this installation
            raise
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app, showing deepprofile's own errors as one clean line."""
    try:
        app()
    except DeepProfileError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
