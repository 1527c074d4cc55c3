"""The ``deepprofile`` command line (typer): layers, train, capture, demo and the analyses.

Analysis subpackages add their own commands through ``register(app)`` functions
listed in ``_COMMAND_MODULES``; their heavy imports happen inside the commands so
``deepprofile --help`` stays fast.

Errors: option values are checked while parsing (:mod:`deepprofile.cliparams`), and
every usage error or :class:`~deepprofile.errors.DeepProfileError` raised by a command
is printed as one line ``error: ...`` on stderr with exit code 2, in-process too (so
``typer.testing.CliRunner`` sees what a shell sees).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

import deepprofile
from deepprofile import cliparams as cp
from deepprofile.errors import DeepProfileError


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` as one line on stderr; return the exit (code 2) to raise."""
    line = " ".join(str(message).split())
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(2)


class _OneLineErrors(TyperGroup):
    """The app's group: usage errors and deepprofile errors become one line, exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import ClickException

        try:
            return super().invoke(ctx)
        except ClickException as exc:
            where = f" (see `{ctx.command_path} {ctx.invoked_subcommand or ''} --help`)"
            raise fail(exc.format_message() + where.replace("  ", " ")) from None
        except DeepProfileError as exc:
            raise fail(str(exc)) from None


app = typer.Typer(
    name="deepprofile",
    help="Open up trained image classifiers: capture activations, study their topology, "
    "mapper graphs and weight spectra, attributions, and write HTML reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_OneLineErrors,
)
console = Console(stderr=True)
out = Console()

Device = Annotated[str, typer.Option(parser=cp.device,
                                     help="auto (CUDA when available), cpu, cuda, cuda:1 ...")]
Seed = Annotated[int, typer.Option(parser=cp.integer(0), help="Seed for every random choice.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Arch = Annotated[str | None, typer.Option(
    help="Architecture of a plain weights file (default: from the checkpoint or run.json).")]
NumClasses = Annotated[int | None, typer.Option(
    parser=cp.integer(1),
    help="Classes of the model head (default: read from the classifier's weights).")]


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
        parser=cp.integer(1, 4096),
        help="Input shape C H W used to compute output shapes.")] = (3, 224, 224),
    arch: Arch = None,
    num_classes: NumClasses = None,
    filter: Annotated[str | None, typer.Option(
        "--filter", help="Only module paths matching this glob (e.g. 'layer*.*.conv*').")] = None,
) -> None:
    """List selectable module paths with their output shapes for an input size."""
    from deepprofile.capture.inspect import layer_table
    from deepprofile.capture.selectors import resolve_layers
    from deepprofile.models import load_model

    net, info = load_model(model, num_classes=num_classes, arch=arch)
    try:
        rows = layer_table(net, tuple(input_size))
    except RuntimeError as exc:
        raise DeepProfileError(
            f"{info.arch} does not run on inputs of shape {'x'.join(map(str, input_size))}: "
            f"{str(exc).splitlines()[0]} Give --input-size C H W that the model accepts."
        ) from None
    keep = set(resolve_layers(net, filter)) if filter else None
    table = Table(title=f"{info.arch} ({info.source})")
    for col in ("module path", "type", "output shape", "params"):
        table.add_column(col)
    for row in rows:
        if keep is None or row.name in keep:
            shape = "not run" if row.output_shape is None else "x".join(map(str, row.output_shape))
            table.add_row(row.name, row.type, shape, f"{row.n_params:,}")
    out.print(table)


DataName = Annotated[Literal["digits", "shapes", "folder"], typer.Option(
    help="digits, shapes, or folder (an ImageFolder tree, with --data-root).")]
DataRoot = Annotated[Path | None, typer.Option(
    help="Image folder for --data folder: one sub-folder per class (or train/ and test/ "
         "sub-folders holding those).")]
ImageSize = Annotated[int, typer.Option(parser=cp.integer(8, 4096),
                                        help="Resize (and centre crop) for --data folder.")]
Normalize = Annotated[str | None, typer.Option(
    parser=cp.normalization,
    help="Normalisation of --data folder images: imagenet, dataset (mean/std of the images), "
         "none, or MEAN,STD (e.g. 0.5,0.25 or 0.48:0.46:0.41,0.23:0.22:0.23). Default: what "
         "the checkpoint was trained with, else imagenet.")]


def _folder_params(data: str, data_root: Path | None, image_size: int,
                   normalize: str | None) -> dict[str, Any]:
    if data != "folder":
        if data_root is not None:
            raise DeepProfileError(f"--data-root is for --data folder, not --data {data}.")
        return {}
    if data_root is None:
        raise DeepProfileError("--data folder needs --data-root DIR (one sub-folder per class).")
    return {"root": data_root, "image_size": image_size, "normalize": normalize or "imagenet"}


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for checkpoints and log.")] = Path(
        "runs/train"),
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "small_resnet",
    data: DataName = "digits",
    data_root: DataRoot = None,
    image_size: ImageSize = 224,
    normalize: Normalize = None,
    epochs: Annotated[int, typer.Option(parser=cp.integer(1), help="Training epochs.")] = 8,
    batch_size: Annotated[int, typer.Option(parser=cp.integer(1), help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(parser=cp.number(0, 10, lo_open=True),
                                      help="Peak learning rate (one-cycle SGD).")] = 0.05,
    checkpoints: Annotated[int, typer.Option(parser=cp.integer(1),
                                             help="Checkpoints kept per run.")] = 4,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a model on digits, shapes or an image folder; keeps checkpoints and a JSON log.

    An image folder with train/ and test/ (or val/) sub-folders uses those; otherwise a
    seeded, stratified fifth of each class is held out for testing.
    """
    from deepprofile.models import resolve_device
    from deepprofile.models.train import TrainConfig
    from deepprofile.models.train import train as run_train

    cp.output_folder(out_dir)
    params = _folder_params(data, data_root, image_size, normalize)
    if params:
        params["root"] = str(Path(params["root"]).resolve())
    in_channels = 1 if data == "digits" else 3
    kwargs = {"in_channels": in_channels} if arch == "small_resnet" else {}
    config = TrainConfig(arch=arch, arch_kwargs=kwargs, dataset=data, dataset_params=params,
                         epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         n_checkpoints=checkpoints)
    result = run_train(config, out_dir, device=resolve_device(device), quiet=quiet)
    out.print(f"test accuracy {result.test_accuracy:.4f} after {epochs} epochs "
              f"({result.seconds:.1f} s); checkpoint {result.final_checkpoint}",
              markup=False, highlight=False, soft_wrap=True)


def _warn(text: str) -> None:
    typer.echo(f"warning: {' '.join(text.split())}", err=True)


@app.command()
def capture(
    model: Annotated[str, typer.Argument(help="Checkpoint path or architecture name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path(
        "runs/capture"),
    data: DataName = "digits",
    split: Annotated[Literal["train", "test"] | None, typer.Option(
        help="Dataset split: train or test (default: test; a folder without --split is "
             "captured whole).")] = None,
    data_root: DataRoot = None,
    image_size: ImageSize = 224,
    normalize: Normalize = None,
    layer: Annotated[list[str], typer.Option("--layer", "-l", help=(
        "Module path or glob; repeat for several."))] = ["stem", "layer*"],  # noqa: B006
    reduction: Annotated[str, typer.Option(parser=cp.reduction, help=(
        "mean, max, max_position, flatten or positions:k."))] = "mean",
    store_name: Annotated[str, typer.Option(help="Store folder name inside the run.")] = (
        "activations.zarr"),
    limit: Annotated[int | None, typer.Option(
        parser=cp.integer(1), help="Capture only the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(parser=cp.integer(1), help="Batch size.")] = 64,
    chunk_size: Annotated[int | None, typer.Option(
        parser=cp.integer(1), help="Samples per store chunk.")] = None,
    arch: Arch = None,
    num_classes: NumClasses = None,
    unsafe_load: Annotated[bool, typer.Option(
        "--unsafe-load", help="Allow pickled checkpoints (unpickling runs code).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a store made differently.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    scheduler: Annotated[str | None, typer.Option(parser=cp.scheduler, help=(
        "Fill the store's chunks as Dask tasks: local:N (N worker processes on this "
        "machine) or tcp://HOST:PORT (a running scheduler; every worker needs the "
        "checkpoint and data at the same paths). Same store as without. Needs '.[dask]'."
    ))] = None,
    quiet: Quiet = False,
) -> None:
    """Capture activations of LAYERs into RUN_DIR/activations.zarr (resumes if interrupted)."""
    from deepprofile.data import align_classes, load_dataset
    from deepprofile.models import check_forward, load_model, resolve_device
    from deepprofile.workflow import capture_run

    cp.output_folder(out_dir)
    if "/" in store_name or store_name in ("", ".", ".."):
        raise DeepProfileError(f"--store-name {store_name!r} must be a plain folder name.")
    params = _folder_params(data, data_root, image_size, normalize)
    dev = resolve_device(device)
    net, info = load_model(model, num_classes=num_classes, device=dev, arch=arch,
                           unsafe=unsafe_load)
    if params and normalize is None:
        params["normalize"] = _trained_normalization(info.extra) or "imagenet"
    dataset = load_dataset(data, split=split or ("test" if data != "folder" else None),
                           **params)
    dataset, note = align_classes(dataset, info.extra.get("class_names"),
                                  rebuild=(data, split, params))
    if note.startswith("warning"):
        _warn(note.removeprefix("warning: "))
    check_forward(net, dataset, dev, num_classes=info.num_classes)
    indices = range(min(limit, len(dataset))) if limit else None
    run, store = capture_run(
        net, dataset, out_dir, layer, reductions=reduction, store_name=store_name,
        model_info=info.to_dict(), checkpoint=info.source if info.source != "random init" else None,
        batch_size=batch_size, chunk_size=chunk_size, device=dev, seed=seed,
        overwrite=overwrite, quiet=quiet, indices=indices, extra={"class_order": note},
        scheduler=scheduler,
        load_options={"num_classes": num_classes, "arch": arch, "unsafe": unsafe_load},
    )
    table = Table(title=f"{store.path} ({store.n_samples} samples, accuracy {store.accuracy:.3f})")
    for col in ("layer", "output", "reduction", "stored"):
        table.add_column(col)
    for name, row in store.summary()["layers"].items():
        table.add_row(name, "x".join(map(str, row["output_shape"])), row["reduction"],
                      "x".join(map(str, row["stored_shape"])))
    out.print(table)


def _trained_normalization(extra: dict[str, Any]) -> str | None:
    """``MEAN,STD`` of the folder data a deepprofile checkpoint was trained on, if any."""
    spec = extra.get("dataset") or {}
    if spec.get("name") != "folder" or "mean" not in spec:
        return None
    return ",".join(":".join(f"{v:.6g}" for v in spec[key]) for key in ("mean", "std"))


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run configuration (.yaml/.yml or .toml).")],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace stores made differently.")] = False,
    quiet: Quiet = False,
) -> None:
    """Capture and analyse as a configuration file says (see deepprofile/config.py)."""
    from deepprofile.config import load_config, run_config

    run_config(load_config(config), quiet=quiet, overwrite=overwrite,
               echo=lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("reports/demo"),
    fast: Annotated[bool, typer.Option(
        "--fast", help="Smaller settings (used by the tests).")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train the demo model on digits (if needed), capture, analyse and report."""
    from deepprofile.demo import run_demo
    from deepprofile.models import resolve_device

    cp.output_folder(out_dir)
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
    except DeepProfileError as exc:  # raised outside a command (while building the app)
        fail(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
