"""Concepts: which layer knows what (probes, TCAV), where it lives, and spurious signals.

``ConceptSet`` (sets.py) holds boolean concepts per store row; ``fit_probe`` /
``ConceptProbe`` (probes.py) decode them from stored activations; ``run_concepts``
(pipeline.py) writes ``results/concepts.json``. Heavy pieces import lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConceptSet": "sets", "FolderConcept": "sets", "shapes_concepts": "sets",
    "shapes_regions": "sets", "shapes_table": "sets", "class_group_concept": "sets",
    "array_concept": "sets", "folder_concept": "sets", "parse_concept_spec": "sets",
    "ConceptProbe": "probes", "ProbeFit": "probes", "fit_probe": "probes",
    "save_probes": "probes", "load_probes": "probes",
    "run_concepts": "pipeline", "ConceptsResult": "pipeline",
    "tcav_scores": "tcav", "TCAVResult": "tcav",
    "run_spurious": "spurious", "SpuriousResult": "spurious",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"deepprofile.concepts.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'deepprofile.concepts' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
