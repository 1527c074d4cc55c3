"""Data attribution: which training images taught the model a prediction or a concept.

TRAK (traker's gradient computer, projector and score computer) ensembled over the
checkpoints that training keeps (trak.py), with features in a resumable Zarr store
(store.py) and model outputs for prediction margins and concept probes (outputs.py);
``run_data_attribution`` (pipeline.py) writes ``results/data_attribution.json``; LDS and
removal checks (evaluation.py) and TracInCP / random baselines (baselines.py) say how much
to trust the scores. Heavy pieces import lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_data_attribution": "pipeline", "summarize_data_attribution": "pipeline",
    "find_checkpoints": "pipeline",
    "DataAttributionResult": "results", "TargetAttribution": "results",
    "RankedImage": "results", "Precision": "results", "precision_at_k": "results",
    "TrakEnsemble": "trak", "DataAttributionError": "trak",
    "MarginOutput": "outputs", "ConceptProbeOutput": "outputs",
    "lds": "evaluation", "LDSResult": "evaluation", "random_subsets": "evaluation",
    "removal_check": "evaluation", "RemovalResult": "evaluation",
    "tracin_scores": "baselines", "random_scores": "baselines",
    "compare_data_attribution": "compare",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"deepprofile.data_attribution.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'deepprofile.data_attribution' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
