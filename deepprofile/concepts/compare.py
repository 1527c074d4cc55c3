"""Concept curves of two runs side by side (for ``deepprofile compare``).

Reads each run's ``results/concepts.json`` and, for every concept both runs probed, lists per
common layer the probe accuracy with its shuffled-label and random-init controls, plus the
first decodable layer of each run. Nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def concept_curves(run_a: str | Path, run_b: str | Path, notes: list[str]) -> dict[str, Any] | None:
    """``{"layers": [...], "concepts": [{concept, a: {...}, b: {...}}]}`` or None (with a note)."""
    from deepprofile.concepts.pipeline import RESULT_NAME, ConceptsResult
    from deepprofile.rundir import RunDir

    dirs = {"A": RunDir(run_a), "B": RunDir(run_b)}
    missing = [label for label, rd in dirs.items() if not rd.has_result(RESULT_NAME)]
    if len(missing) == 2:
        return None  # neither run has concepts: nothing to say
    if missing:
        notes.append(f"concept curves skipped: run {missing[0]} has no results/concepts.json "
                     f"(run `deepprofile concepts {dirs[missing[0]].path}`)")
        return None
    results = [ConceptsResult.from_dict(rd.read_result(RESULT_NAME)) for rd in dirs.values()]
    a, b = results
    layers = [layer for layer in a.layers if layer in b.layers]
    names_b = {p.concept for p in b.concepts}
    rows = []
    for pa in a.concepts:
        if pa.concept not in names_b:
            continue
        pb = b.profile(pa.concept)
        row: dict[str, Any] = {"concept": pa.concept}
        for key, prof in (("a", pa), ("b", pb)):
            row[key] = {
                "accuracy": [prof.layer(layer).accuracy for layer in layers],
                "accuracy_std": [prof.layer(layer).accuracy_std for layer in layers],
                "shuffled": [prof.layer(layer).shuffled_accuracy for layer in layers],
                "baseline": [prof.layer(layer).baseline_accuracy for layer in layers],
                "decodable": [prof.layer(layer).decodable for layer in layers],
                "first_layer": prof.first_layer, "known": prof.known,
            }
        rows.append(row)
    if not rows:
        notes.append("concept curves skipped: the runs share no probed concept")
        return None
    return {"layers": layers, "concepts": rows}
