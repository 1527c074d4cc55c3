"""Option parsers and checks for the command line: values are validated where they enter.

Every option value an analysis cannot use is refused while the command line is parsed
(exit code 2, one line naming the option), before a model is loaded or a file written.
Typer takes these as ``typer.Option(parser=...)``; each parser is called on the raw text
of one value (once per item for repeated options) and raises ``typer.BadParameter``.
Choices use ``Literal[...]`` annotations, which typer checks itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import typer

from deepprofile.errors import DeepProfileError


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """A parser for an integer in ``[lo, hi]``."""

    def parse(value: str) -> int:
        try:
            x = int(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not an integer.") from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            bounds = " and ".join(b for b in (
                f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if b)
            raise typer.BadParameter(f"{x} is not {bounds}.")
        return x

    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """A parser for a finite float in ``[lo, hi]`` (``*_open`` excludes that bound).

    NaN and inf are refused: they pass every comparison-based range check silently.
    """

    def parse(value: str) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a number.") from None
        if not math.isfinite(x):
            raise typer.BadParameter(f"{value!r} is not a finite number.")
        bad_lo = lo is not None and (x <= lo if lo_open else x < lo)
        bad_hi = hi is not None and (x >= hi if hi_open else x > hi)
        if bad_lo or bad_hi:
            bounds = " and ".join(b for b in (
                f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "",
                f"{'<' if hi_open else '<='} {hi:g}" if hi is not None else "") if b)
            raise typer.BadParameter(f"{x:g} is not {bounds}.")
        return x

    parse.__name__ = "number"
    return parse


def rule(analysis: str, key: str) -> Callable[[str], int] | Callable[[str], float]:
    """The parser for ``RULES[analysis][key]`` of :mod:`deepprofile.validate`, so the command
    line and the Python API share one set of limits (per item for list rules)."""
    from deepprofile.validate import RULES

    r = RULES[analysis][key]
    if r.kind is int:
        return integer(None if r.lo is None else int(r.lo), None if r.hi is None else int(r.hi))
    return number(r.lo, r.hi, lo_open=r.lo_open, hi_open=r.hi_open)


def reduction(value: str) -> str:
    """A reduction spec: ``mean``, ``max``, ``max_position``, ``flatten``, ``positions:k``."""
    from deepprofile.capture.reducers import parse_reduction

    try:
        parse_reduction(str(value))
    except (ValueError, DeepProfileError) as exc:
        raise typer.BadParameter(str(exc)) from None
    return str(value)


def device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (CUDA only where a CUDA device exists)."""
    text = str(value)
    if text == "auto":
        return text
    kind, sep, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (sep and not index.isdigit()):
        raise typer.BadParameter(f"{text!r} is not a device; use auto, cpu, cuda or cuda:N.")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{text!r} was asked for but no CUDA device is available.")
        if index and int(index) >= torch.cuda.device_count():
            raise typer.BadParameter(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    if kind == "mps":
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise typer.BadParameter(f"{text!r} was asked for but no MPS device is available.")
    return text


def normalization(value: str) -> str:
    """``imagenet``, ``dataset``, ``none`` or ``MEAN,STD`` (one or three values each,
    as ``0.5,0.25`` or ``0.485:0.456:0.406,0.229:0.224:0.225``)."""
    from deepprofile.data.adapters import parse_normalization

    try:
        parse_normalization(str(value))
    except DeepProfileError as exc:
        raise typer.BadParameter(str(exc)) from None
    return str(value)


def scheduler(value: str) -> str:
    """``local:N`` (N worker processes here) or ``tcp://HOST:PORT`` (a running Dask scheduler)."""
    from deepprofile.distributed import parse_scheduler

    try:
        parse_scheduler(str(value))
    except DeepProfileError as exc:
        raise typer.BadParameter(str(exc)) from None
    return str(value)


SCHEDULER_HELP = ("Run the per-layer work as Dask tasks: local:N (N worker processes on "
                  "this machine) or tcp://HOST:PORT (a running scheduler). Needs '.[dask]'.")


def output_folder(path: Path, option: str = "--out") -> Path:
    """Refuse an output path that exists and is not a folder (before anything is written)."""
    if path.exists() and not path.is_dir():
        raise DeepProfileError(f"{option} {path} is a file, not a folder; give a folder path.")
    return path


def run_folder(path: Path) -> Path:
    """Refuse a path that is not an existing run folder (one holding run.json)."""
    if not path.is_dir():
        raise DeepProfileError(
            f"{path} is not a folder; give a run folder made by `deepprofile capture`.")
    if not (path / "run.json").is_file():
        raise DeepProfileError(
            f"{path} is not a run folder (no run.json); make one with "
            "`deepprofile capture MODEL --out RUN_DIR`.")
    return path


def one_of(*values: str) -> Callable[[str], str]:
    """A parser accepting exactly one of ``values`` (for repeated options, where typer
    cannot take a ``Literal`` item type)."""

    def parse(value: str) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}.")
        return value

    parse.__name__ = "one_of"
    return parse
