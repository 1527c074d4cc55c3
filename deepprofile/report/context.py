"""The context handed to every section builder: the run's results, links, ids, figures."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deepprofile.errors import DeepProfileError
from deepprofile.report import figures as F
from deepprofile.report.blocks import FigureBlock, Heading, Link


class ReportContext:
    """What a section builder needs: the run's overview and results (read once, cached),
    links relative to the report's folder, unique element ids and figure rendering.

    A results file that cannot be read (invalid JSON, no permission) is skipped with a note
    in the page, or, with ``strict``, raises its one-line :class:`DeepProfileError`."""

    def __init__(self, run_dir: str | Path, output_dir: str | Path,
                 results: Mapping[str, Any] | None = None, *, strict: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.output_dir = Path(output_dir)
        self.strict = strict
        self.notes: list[str] = []
        self._cache: dict[str, Any] = dict(results or {})
        self._ids: set[str] = set()

    # -- data ---------------------------------------------------------------------------
    @property
    def overview(self) -> dict[str, Any] | None:
        if "__overview__" not in self._cache:
            path = self.run_dir / "run.json"
            self._cache["__overview__"] = self._read(path) if path.exists() else None
        return self._cache["__overview__"]

    def result_names(self) -> list[str]:
        """Names of the result files present (``results/<name>.json``)."""
        found = {p.stem for p in (self.run_dir / "results").glob("*.json")}
        found |= {k for k in self._cache if not k.startswith("__") and self._cache[k]}
        return sorted(found)

    def result(self, name: str) -> Any:
        """``results/<name>.json`` as plain data, or ``None`` when absent or unreadable
        (an unreadable file is reported in the page's notes)."""
        if name not in self._cache:
            path = self.run_dir / "results" / f"{name}.json"
            self._cache[name] = self._current(name, self._read(path) if path.exists() else None)
        return self._cache[name]

    def _current(self, name: str, data: Any) -> Any:
        """Refuse a result computed from an earlier capture of its store (noted in the page);
        flag one whose store is gone."""
        if not isinstance(data, dict):
            return data
        from deepprofile.rundir import check_result_identity

        verdict = check_result_identity(data, self.run_dir, f"results/{name}.json")
        if verdict.status == "stale":
            self.notes.append(f"Not shown: {verdict.message}")
            return None
        if verdict.status == "missing":
            self.notes.append(verdict.message)
        return data

    def _read(self, path: Path) -> Any:
        from deepprofile.results import read_json

        try:
            return read_json(path)
        except DeepProfileError as exc:
            if self.strict:
                raise
            self.notes.append(f"Skipped {path.name}: {exc}")
            return None

    def read_all(self) -> None:
        """Read every results file now, so that a damaged one is noted (or, with ``strict``,
        raised) even when no section reads it."""
        for name in self.result_names():
            self.result(name)

    @property
    def class_names(self) -> list[str]:
        ov = self.overview or {}
        return [str(c) for c in (ov.get("class_names") or [])]

    def class_name(self, label: Any) -> str:
        names = self.class_names
        try:
            i = int(label)
        except (TypeError, ValueError):
            return str(label)
        return names[i] if 0 <= i < len(names) else str(i)

    # -- links and ids ------------------------------------------------------------------
    def href(self, rel: str | Path) -> str:
        """URL of ``RUN_DIR/rel`` relative to the report's folder."""
        target = (self.run_dir / rel).resolve()
        relpath = os.path.relpath(target, self.output_dir.resolve())
        return quote(Path(relpath).as_posix())

    def link(self, text: str, rel: str | Path) -> Link:
        return Link(text, self.href(rel), missing=not (self.run_dir / rel).exists())

    def unique_id(self, base: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", str(base).lower()).strip("-") or "x"
        if slug[0].isdigit():
            slug = "s-" + slug
        candidate, k = slug, 2
        while candidate in self._ids:
            candidate, k = f"{slug}-{k}", k + 1
        self._ids.add(candidate)
        return candidate

    def heading(self, title: str, base: str | None = None) -> Heading:
        return Heading(self.unique_id(base or title), title)

    def figure(self, fig: Any, caption: str, *, title: str = "", height: int | None = None,
               wide: bool = False, id_base: str = "fig") -> FigureBlock:
        div_id = self.unique_id(id_base)
        return FigureBlock(div_id, caption, F.render(fig, div_id, height), title, wide)

