"""Capture hidden-layer activations with forward hooks and store them on disk."""

from deepprofile.capture.hooks import ActivationRecorder, BatchCapture, hook_count
from deepprofile.capture.reducers import Reduction, parse_reduction, reduce
from deepprofile.capture.selectors import close_matches, module_names, resolve_layers
from deepprofile.capture.store import ActivationStore

__all__ = [
    "ActivationRecorder", "ActivationStore", "BatchCapture", "Reduction", "close_matches",
    "hook_count", "module_names", "parse_reduction", "reduce", "resolve_layers",
]

from deepprofile.capture.runner import capture_to_store  # noqa: E402

__all__ += ["capture_to_store"]
