"""Provenance: package versions, weights hashes and timestamps recorded with every result."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import platform
import sys
from importlib import metadata

import torch
from torch import nn

_PACKAGES = (
    "deepprofile", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "giotto-tda",
    "giotto-ph", "zarr", "kmapper", "networkx", "hypernetx", "captum", "POT", "plotly",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour shapes the numbers."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    # looked up once per process: reading every package's metadata costs ~10 ms
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def weights_hash(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the model's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        # the array's own buffer: no copy of the weights (same bytes as .tobytes())
        digest.update(memoryview(t.numpy().reshape(-1)).cast("B"))
    return digest.hexdigest()[:16]


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string (seconds)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def command_line() -> str:
    """The command line that started this process."""
    return " ".join(sys.argv)
