"""Content fingerprints of file-backed datasets, checked when a capture resumes.

A folder dataset is recorded in the store's configuration by its root, size and
transform, which stay the same when the images themselves are replaced (same
names, same count). Resuming then would mix chunks of the old and the new
images. The fingerprint hashes the bytes and relative names of the files behind
the captured rows, so such a resume raises
:class:`~deepprofile.errors.StoreMismatchError` instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

_BLOCK = 1 << 20


def _files(dataset: Dataset) -> list[str] | None:
    """The file path behind each sample (torchvision ``ImageFolder``-like ``samples``)."""
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if not samples:
        return None
    try:
        return [str(s[0] if isinstance(s, (tuple, list)) else s) for s in samples]
    except (TypeError, IndexError):
        return None


def content_fingerprint(dataset: Dataset, rows: Sequence[int]) -> str | None:
    """SHA-256 (16 hex digits) of the names and bytes of the files of ``rows``.

    ``None`` for datasets that are not backed by files (arrays, procedural data),
    whose ``spec()`` already pins their content.
    """
    files = _files(dataset)
    if files is None:
        return None
    root = os.path.commonpath(files) if files else ""
    h = hashlib.sha256()
    for row in rows:
        path = Path(files[int(row)])
        h.update(os.path.relpath(path, root).encode() + b"\0")
        try:
            with open(path, "rb") as fh:
                while block := fh.read(_BLOCK):
                    h.update(block)
        except OSError as exc:
            h.update(f"unreadable:{type(exc).__name__}".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
