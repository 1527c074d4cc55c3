"""A rich progress bar that can be silenced (``quiet``), shared by the spectral modules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_iter(
    items: Iterable[T], description: str, *, quiet: bool = False, total: int | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a transient rich progress bar unless ``quiet``."""
    if quiet:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
