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


class StageLog:
    """Plain progress lines for multi-stage work, printed when no live bar can show.

    ``weights`` are the stages' expected relative costs. After the first stage the
    total is estimated from its measured time; after each stage one line on stderr
    gives the stage, its time, the elapsed time and the estimated time left (the
    cost per weight unit measured so far times the weights still to do). Silent when
    ``quiet`` or when stderr is a terminal (the rich bar shows there instead).
    """

    def __init__(self, name: str, weights: dict[str, float], *, quiet: bool = False,
                 always: bool = False) -> None:
        import sys
        import time

        self.name, self.weights = name, {k: max(float(v), 1e-9) for k, v in weights.items()}
        self.done: list[str] = []
        self.start = time.perf_counter()
        self.enabled = not quiet and (always or not sys.stderr.isatty())

    def finished(self, stage: str) -> str | None:
        """Record that ``stage`` ended; return (and print) its progress line."""
        import sys
        import time

        if stage not in self.weights:
            return None
        self.done.append(stage)
        elapsed = time.perf_counter() - self.start
        units_done = sum(self.weights[s] for s in self.done)
        left = sum(w for s, w in self.weights.items() if s not in self.done)
        remaining = elapsed / units_done * left
        n, total = len(self.done), len(self.weights)
        line = (f"{self.name}: {stage} done ({n}/{total}), elapsed {_clock(elapsed)}, "
                f"about {_clock(remaining)} left")
        if n == 1 and total > 1:
            line += f" (estimated total {_clock(elapsed + remaining)})"
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
        return line


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
