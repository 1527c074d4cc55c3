"""A run folder: one capture and every result computed from it.

Layout::

    RUN_DIR/
      run.json              overview: model, weights hash, dataset, layers, accuracy,
                            parameters, package versions, date, command, and
                            ``commands``: every command that wrote a result here
      activations.zarr/     the ActivationStore
      results/<name>.json   one file per analysis (topology, mapper, spectral, ...)
      mapper/<layer>.html   interactive pages written beside the results

      results.stale-<UTC time>/  results moved aside by ``capture --overwrite``
      .lock                 held while run.json is merged (owner pid inside)
      .<store>.lock         held by the capture writing that store

Analyses write here and never render; ``deepprofile report RUN_DIR`` renders.

Staleness: every result written under ``results/`` records the identity of the
store it was computed from (store name, weights hash, fingerprint of the stored
arrays). :func:`check_result_identity` compares that record with the store now in
the run, so the report can refuse or flag results of a store that has since been
captured again; ``capture --overwrite`` also moves the results of the replaced
store aside into ``results.stale-<time>/``.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepprofile.errors import DeepProfileError, StaleResultError
from deepprofile.results import read_json, write_json

IDENTITY_KEY = "store_identity"


class RunDir:
    """Paths and JSON access for one run folder."""

    STORE = "activations.zarr"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def store_path(self) -> Path:
        return self.path / self.STORE

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def result_path(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def has_result(self, name: str) -> bool:
        return self.result_path(name).exists()

    def write_result(self, name: str, result: Any) -> Path:
        """Write ``result`` (a dataclass with ``to_dict`` or plain JSON data) atomically."""
        data = result.to_dict() if hasattr(result, "to_dict") else result
        path = write_json(self.result_path(name), data)
        self.record_command(name)
        return path

    def record_command(self, result_name: str) -> None:
        """Note in ``run.json`` (when it exists) the command line that wrote a result, so
        the report can list every command that built the run (``commands``: one entry per
        command, with the results it wrote)."""
        from deepprofile.provenance import command_line, now_iso

        if not self.overview_path.exists():
            return
        cmd = command_line()

        def update(overview: dict[str, Any]) -> dict[str, Any]:
            commands = [dict(c) for c in overview.get("commands") or []]
            if not commands and overview.get("command"):  # the capture that made the folder
                commands.append({"command": overview["command"],
                                 "date": overview.get("date"), "results": []})
            if commands and commands[-1].get("command") == cmd:
                results = list(commands[-1].get("results") or [])
                commands[-1]["results"] = results + [result_name] * (
                    result_name not in results)
            else:
                commands.append({"command": cmd, "date": now_iso(), "results": [result_name]})
            return {**overview, "commands": commands}

        self.merge_overview(update)  # under the run folder's lock, like the capture's update

    def read_result(self, name: str) -> Any:
        return read_json(self.result_path(name))

    @property
    def overview_path(self) -> Path:
        return self.path / "run.json"

    def write_overview(self, overview: dict[str, Any]) -> Path:
        return write_json(self.overview_path, overview)

    def read_overview(self) -> dict[str, Any]:
        return read_json(self.overview_path)

    @contextmanager
    def lock(self, timeout: float = 60.0) -> Iterator[Path]:
        """Hold the run folder's lock (waits up to ``timeout`` s for another holder)."""
        from deepprofile.locking import file_lock

        with file_lock(self.path / ".lock", what=f"The run folder {self.path}",
                       blocking=True, timeout=timeout) as path:
            yield path

    def merge_overview(self, update: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
        """Read run.json, apply ``update`` and write it back, atomically under the lock,
        so concurrent captures (e.g. two ``--store-name``) never lose each other's entries."""
        with self.lock():
            current = self.read_overview() if self.overview_path.exists() else {}
            return self.write_overview(update(current))

    def move_results_aside(self, store_name: str = STORE) -> Path | None:
        """Move the results computed from ``store_name`` (and unstamped ones when it is the
        default store) into ``results.stale-<UTC time>/``; return that folder, if any."""
        if not self.results_dir.is_dir():
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path / f"results.stale-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.path / f"results.stale-{stamp}-{n}"
        moved = False
        for path in sorted(self.results_dir.glob("*.json")):
            try:
                ident = read_json(path).get(IDENTITY_KEY)
            except (DeepProfileError, AttributeError):
                ident = None
            owner = ident.get("store") if isinstance(ident, dict) else None
            if owner == store_name or (owner is None and store_name == self.STORE):
                target.mkdir(parents=True, exist_ok=True)
                path.rename(target / path.name)
                moved = True
        pages = self.path / "mapper"
        if moved and pages.is_dir() and not (self.results_dir / "mapper.json").exists():
            shutil.move(str(pages), str(target / "mapper"))
        return target if moved else None

    def store(self, verify: bool = True):
        """Open the run's activation store."""
        from deepprofile.capture.store import ActivationStore

        return ActivationStore.open(self.store_path, verify=verify)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _store_ref(data: dict[str, Any], max_depth: int = 3) -> str | None:
    """The first ``"store": <path>`` entry in ``data``'s nested dicts (breadth first)."""
    queue: deque[tuple[Any, int]] = deque([(data, 0)])
    while queue:
        node, depth = queue.popleft()
        value = node.get("store")
        if isinstance(value, str) and value:
            return value
        if depth < max_depth:
            queue.extend((v, depth + 1) for v in node.values() if isinstance(v, dict))
    return None


def _resolve_store(run: Path, name: str | None) -> Path | None:
    candidates = []
    if name:
        candidates += [Path(name), run / name, run / Path(name).name]
    candidates.append(run / RunDir.STORE)
    for cand in candidates:
        if (cand / "zarr.json").is_file():
            return cand
    return None


def store_identity(store_path: str | Path) -> dict[str, Any] | None:
    """The identity of the finished store at ``store_path``; ``None`` when there is none
    (absent, unfinished or damaged)."""
    from deepprofile.capture.store import ActivationStore

    try:
        store = ActivationStore.open(store_path, verify=False)
        if not store.is_complete:
            return None
        return store.identity
    except DeepProfileError:
        return None


def stamp_identity(run_dir: str | Path, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``store_identity`` set to the store it names (or the run's store).

    Left unchanged when the folder holds no finished store (a results folder that is
    not part of a run) or when ``data`` already carries an identity.
    """
    if IDENTITY_KEY in data:
        return data
    run = Path(run_dir)
    path = _resolve_store(run, _store_ref(data))
    ident = store_identity(path) if path is not None else None
    if ident is None:
        return data
    if path.resolve().parent == run.resolve():
        ident["store"] = path.name
    else:
        ident["store"] = str(path.resolve())
    return {**data, IDENTITY_KEY: ident}


@dataclass(frozen=True)
class ResultIdentity:
    """Whether a result belongs to the store now in its run folder.

    ``status`` is ``"current"`` (same store, same weights, same stored arrays),
    ``"stale"`` (the store was captured again since: other weights or arrays),
    ``"missing"`` (the store it names is gone) or ``"unknown"`` (the result records
    no identity, e.g. written by an older deepprofile).
    """

    status: str
    message: str
    recorded: dict[str, Any] | None
    current: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.status == "current"


def check_result_identity(result: dict[str, Any], run_dir: str | Path,
                          name: str = "result") -> ResultIdentity:
    """Compare the store identity recorded in ``result`` with the run's store now."""
    run = Path(run_dir)
    recorded = result.get(IDENTITY_KEY) if isinstance(result, dict) else None
    if not isinstance(recorded, dict):
        path = _resolve_store(run, None)
        return ResultIdentity(
            "unknown", f"{name} records no store identity; it may come from an earlier "
            "capture. Run the analysis again to be sure.", None,
            store_identity(path) if path else None)
    store_name = str(recorded.get("store") or RunDir.STORE)
    path = Path(store_name) if Path(store_name).is_absolute() else run / store_name
    current = store_identity(path) if (path / "zarr.json").is_file() else None
    if current is None:
        return ResultIdentity(
            "missing", f"{name} was computed from the store {store_name}, which is no longer "
            f"a finished store in {run}.", recorded, None)
    same = (current.get("weights_hash") == recorded.get("weights_hash")
            and current.get("fingerprint") == recorded.get("fingerprint"))
    if same:
        return ResultIdentity("current", f"{name} matches the store {store_name}.",
                              recorded, current)
    return ResultIdentity(
        "stale", f"{name} was computed from an earlier capture of {store_name} (weights "
        f"{recorded.get('weights_hash')}, fingerprint {recorded.get('fingerprint')}); the "
        f"store now holds weights {current.get('weights_hash')}, fingerprint "
        f"{current.get('fingerprint')}. Run the analysis again.", recorded, current)


def require_current(result: dict[str, Any], run_dir: str | Path, name: str = "result",
                    allow_unknown: bool = True) -> ResultIdentity:
    """:func:`check_result_identity`, raising :class:`StaleResultError` unless current
    (results without identity pass when ``allow_unknown``)."""
    ident = check_result_identity(result, run_dir, name)
    if ident.ok or (allow_unknown and ident.status == "unknown"):
        return ident
    raise StaleResultError(ident.message)
