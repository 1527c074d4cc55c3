"""Progress bars shared by every long-running step.

One transient rich bar on stderr (so a summary piped from stdout stays clean),
switched off by ``quiet`` and whenever stderr is not a terminal (CI logs, pipes),
where a live bar would only print blank lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_bar(quiet: bool = False) -> Progress:
    """A transient progress bar (description, bar, n/total, elapsed, remaining)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=quiet or not console.is_terminal,
    )


def progress_iter(items: Iterable[T], description: str, *, quiet: bool = False,
                  total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a :func:`progress_bar` unless ``quiet``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(quiet) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
