"""Compare the top training images of two runs' data attributions (same training set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from deepprofile.data_attribution.pipeline import RESULT_NAME
from deepprofile.rundir import RunDir


def compare_data_attribution(run_a: str | Path, run_b: str | Path) -> dict[str, Any] | None:
    """Per target present in both runs (classes, concepts): overlap (Jaccard) of the most
    helpful and of the most harmful training images, and the Spearman correlation of the
    full score columns. ``None`` when either run has no data attribution; targets are
    only compared when both runs attributed to the same training set."""
    a, b = RunDir(run_a), RunDir(run_b)
    if not (a.has_result(RESULT_NAME) and b.has_result(RESULT_NAME)):
        return None
    ra, rb = a.read_result(RESULT_NAME), b.read_result(RESULT_NAME)
    same_data = (ra.get("train_dataset") == rb.get("train_dataset")
                 and ra.get("n_train") == rb.get("n_train"))
    out: dict[str, Any] = {"same_training_set": bool(same_data), "targets": []}
    if not same_data:
        return out
    tb = {t["name"]: t for t in rb["targets"] if t["kind"] != "prediction"}
    for ta in ra["targets"]:
        other = tb.get(ta["name"])
        if ta["kind"] == "prediction" or other is None:
            continue
        row: dict[str, Any] = {"target": ta["name"], "kind": ta["kind"]}
        for side in ("helpful", "harmful"):
            sa = {r["index"] for r in ta[side]}
            sb = {r["index"] for r in other[side]}
            row[f"{side}_jaccard"] = len(sa & sb) / max(1, len(sa | sb))
            row[f"{side}_shared"] = sorted(sa & sb)
        key = "predictions" if ta["kind"] == "class" else f"concept:{ta['name'][8:]}"
        fa, fb = ra["scores_files"].get(key), rb["scores_files"].get(key)
        if ta["kind"] == "concept" and fa and fb:
            col_a = np.load(a.path / fa)[:, 0]
            col_b = np.load(b.path / fb)[:, 0]
            row["score_spearman"] = float(spearmanr(col_a, col_b).statistic)
        out["targets"].append(row)
    return out
