"""JSON helpers shared by every analysis result.

Analyses return frozen dataclasses with ``to_dict()`` / ``from_dict()``; these
helpers turn numpy values into JSON and write files atomically, so a run that
dies while writing never leaves a half-written result behind. Temporary files
carry the writer's pid (``.<name>.<pid>.<random>.tmp``);
:func:`clean_stale_temp` deletes those of dead processes.

Every result written into a run folder (``RUN_DIR/results/<name>.json``) records
which activation store it was computed from (``store_identity``: store name,
weights hash, store fingerprint); see :func:`deepprofile.rundir.check_result_identity`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Convert numpy arrays/scalars, dataclasses, tuples and paths into JSON-ready values.

    Non-finite floats are kept (``NaN``/``Infinity`` tokens, which Python's json
    reads back) because persistence diagrams carry infinite deaths.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return jsonable(obj.to_dict())
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return float("nan")
    return obj


RUN_SPECIFIC_KEYS = frozenset({"created", "date", "command", "timings", "seconds"})


def comparable(obj: Any) -> Any:
    """A result's JSON without the keys that differ between two identical runs (creation
    time, date, command line, wall-clock timings), at any depth: equal results compare
    equal, float for float, whether they ran in one process or on a cluster."""
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if k not in RUN_SPECIFIC_KEYS}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder + rename), mode 0644 less umask,
    so a run that dies mid-write never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        from deepprofile.testhooks import kill_point

        kill_point("results-write")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")


def clean_stale_temp(folder: str | os.PathLike[str], max_age_s: float = 3600.0) -> list[Path]:
    """Delete temporary files of :func:`write_text` left in ``folder`` by killed writers.

    A file naming its writer's pid is deleted when that process is gone; an older
    file without a pid when it is older than ``max_age_s``. Returns what was deleted.
    """
    from deepprofile.locking import pid_alive

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        match = _TEMP.match(tmp.name)
        try:
            if match:
                pid = int(match["pid"])
                if pid == os.getpid() or pid_alive(pid):
                    continue
            elif time.time() - tmp.stat().st_mtime < max_age_s:
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            continue
    return removed


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (see :func:`write_text`).

    A dict written to ``RUN_DIR/results/`` gets the ``store_identity`` of the store
    it was computed from (see :func:`deepprofile.rundir.stamp_identity`).
    """
    data = jsonable(data)
    if isinstance(data, dict) and Path(path).parent.name == "results":
        from deepprofile.rundir import stamp_identity

        data = stamp_identity(Path(path).parent.parent, data)
    return write_text(path, json.dumps(data, indent=1))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with a clear error when it is missing or damaged."""
    from deepprofile.errors import CorruptStoreError, MissingFileError

    path = Path(path)
    if not path.exists():
        raise MissingFileError(
            f"No such results file: {path}. Run the analysis that writes it first."
        )
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise CorruptStoreError(
            f"Results file {path} is not UTF-8 text ({exc}); delete it and run the analysis "
            "again."
        ) from exc
    except OSError as exc:
        raise CorruptStoreError(
            f"Results file {path} cannot be read ({exc.strerror or exc}); fix its permissions, "
            "or delete it and run the analysis again."
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptStoreError(
            f"Results file {path} is not valid JSON ({exc}); delete it and run the analysis again."
        ) from exc
