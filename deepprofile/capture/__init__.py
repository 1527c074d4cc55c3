"""Capture hidden-layer activations with forward hooks and store them on disk.

The names below are imported on first use (PEP 562), so that reading a store
(:mod:`deepprofile.capture.store`: numpy and Zarr) does not import torch: a Dask worker
that only reads stores (topology, mapper) stays small.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "ActivationRecorder": "hooks", "BatchCapture": "hooks", "hook_count": "hooks",
    "Reduction": "reducers", "parse_reduction": "reducers", "reduce": "reducers",
    "close_matches": "selectors", "module_names": "selectors", "resolve_layers": "selectors",
    "ActivationStore": "store", "capture_to_store": "runner",
}

__all__ = [
    "ActivationRecorder", "ActivationStore", "BatchCapture", "Reduction", "capture_to_store",
    "close_matches", "hook_count", "module_names", "parse_reduction", "reduce",
    "resolve_layers",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
