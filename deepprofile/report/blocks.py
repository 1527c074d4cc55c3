"""What a report section is made of: blocks (the template renders each ``kind``) and the
text formatting every section shares."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Link:
    """A link; ``missing`` marks a target that does not exist (shown, not linked)."""

    text: str
    href: str
    missing: bool = False
    kind: str = "link"


@dataclass
class Text:
    text: str
    note: bool = False
    kind: str = "text"


@dataclass
class Heading:
    """A sub-heading; it gets its own entry in the table of contents."""

    id: str
    title: str
    kind: str = "heading"


@dataclass
class KeyValues:
    rows: list[tuple[str, Any]]
    caption: str = ""
    kind: str = "kv"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    id: str = ""
    numeric: list[bool] = field(default_factory=list)
    kind: str = "table"


@dataclass
class FigureBlock:
    """A rendered plotly figure (``html`` is plotly's div + script) and its caption."""

    id: str
    caption: str
    html: str
    title: str = ""
    wide: bool = False
    kind: str = "figure"


@dataclass
class ImageCell:
    """One embedded image (``src`` a ``data:image/png`` URI) with an optional label;
    ``alt`` is its text for screen readers and hover."""

    src: str
    alt: str = ""
    label: str = ""


@dataclass
class ImageGrid:
    """Images in a table: optional column titles, row titles and per-image labels. Each
    image is a small inline PNG (see :mod:`deepprofile.report.images`), not a figure: a
    grid of 36 attribution maps costs kilobytes instead of megabytes of plotly JSON."""

    id: str
    caption: str
    rows: list[list[ImageCell | None]]
    column_titles: list[str] = field(default_factory=list)
    row_titles: list[str] = field(default_factory=list)
    title: str = ""
    size: int = 112  # displayed width and height in CSS pixels
    kind: str = "images"


@dataclass
class Grid:
    """Blocks side by side (two per row on a laptop screen, one on a narrow window)."""

    items: list[Any]
    kind: str = "grid"


@dataclass
class Frame:
    """An embedded page (a mapper page) in a collapsed box, loaded when opened."""

    id: str
    src: str
    title: str
    caption: str = ""
    kind: str = "frame"


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Any] = field(default_factory=list)
    key: str = ""

    def add(self, *blocks: Any) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self

    @property
    def toc(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading)]

    @property
    def n_figures(self) -> int:
        def count(b: Any) -> int:
            if isinstance(b, FigureBlock):
                return 1
            if isinstance(b, Grid):
                return sum(count(i) for i in b.items)
            return 0

        return sum(count(b) for b in self.blocks)


def fmt(value: Any, digits: int = 3) -> str:
    """Compact text of a number (``–`` for missing values)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(value)


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def shape(values: Iterable[Any] | None) -> str:
    return "×".join(str(v) for v in values) if values else "–"


def short_list(values: Sequence[Any], limit: int = 8) -> str:
    values = list(values)
    if not values:
        return "none"
    head = ", ".join(str(v) for v in values[:limit])
    return f"{len(values)}: {head}" + (", …" if len(values) > limit else "")


def dataset_text(spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return str(spec) if spec else "–"
    name = spec.get("name", "?")
    rest = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{name} ({rest})" if rest else str(name)
