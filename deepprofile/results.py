"""JSON helpers shared by every analysis result.

Analyses return frozen dataclasses with ``to_dict()`` / ``from_dict()``; these
helpers turn numpy values into JSON and write files atomically, so a run that
dies while writing never leaves a half-written result behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
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


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder + rename), mode 0644 less umask,
    so a run that dies mid-write never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (see :func:`write_text`)."""
    return write_text(path, json.dumps(jsonable(data), indent=1))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with a clear error when it is missing or damaged."""
    from deepprofile.errors import CorruptStoreError, MissingFileError

    path = Path(path)
    if not path.exists():
        raise MissingFileError(
            f"No such results file: {path}. Run the analysis that writes it first."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptStoreError(
            f"Results file {path} is not valid JSON ({exc}); delete it and run the analysis again."
        ) from exc
