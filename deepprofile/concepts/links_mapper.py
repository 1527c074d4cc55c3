"""Concepts on mapper graphs: node composition, concept purity, colour values.

A concept is a boolean per store row; a mapper point is a store row or, for layers stored
with several positions per image, one of its positions (``point_sample`` maps points to
rows). Everything here works on a graph dict as stored in ``results/mapper.json``.

- composition: for every node, the share of its members that carry each concept;
- concept purity: the class purity statistic of the mapper analysis
  (:func:`deepprofile.mapper.class_purity`, Purvine et al.) applied to the binary label
  "has the concept": the mean over the nodes holding a positive point of
  ``1 / (distinct labels in the node)``. It is 1 when positives never share a node with
  negatives. Its value depends on the concept's prevalence, so a permutation baseline
  (the same statistic for shuffled masks) is reported beside it;
- colour values: the concept indicator per point, averaged per node by the mapper page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepprofile.errors import ShapeError


def _class_purity():
    from deepprofile.mapper.stats import class_purity

    return class_purity


def point_rows(graph: Mapping[str, Any]) -> np.ndarray:
    """Store row of every point of a stored mapper graph."""
    sample = graph.get("point_sample")
    if sample is not None:
        return np.asarray(sample, dtype=np.int64)
    n = len(graph.get("lens") or []) or (
        1 + max((max(n["members"]) for n in graph["nodes"] if n["members"]), default=-1))
    return np.arange(n, dtype=np.int64)


def point_mask(graph: Mapping[str, Any], mask: np.ndarray) -> np.ndarray:
    """The concept mask (one value per store row) as one value per mapper point."""
    rows = point_rows(graph)
    mask = np.asarray(mask).astype(bool).reshape(-1)
    if len(rows) and rows.max() >= len(mask):
        raise ShapeError(
            f"Mapper graph of {graph.get('layer')!r} refers to store row {int(rows.max())} but the "
            f"concept mask has {len(mask)} rows; the concept set belongs to another store."
        )
    return mask[rows]


def node_composition(nodes: Sequence[Sequence[int]], point_masks: Mapping[str, np.ndarray]
                     ) -> dict[str, list[float]]:
    """Concept -> share of each node's members carrying it (node order kept)."""
    out: dict[str, list[float]] = {}
    for name, pm in point_masks.items():
        pm = np.asarray(pm, dtype=np.float64)
        out[name] = [float(pm[list(m)].mean()) if len(m) else float("nan") for m in nodes]
    return out


def concept_purity(nodes: Sequence[Sequence[int]], pmask: np.ndarray) -> float | None:
    """Class purity of the positive class of the binary label ``pmask`` (None: no positive
    point lies in a node)."""
    labels = np.asarray(pmask).astype(np.int64)
    return _class_purity()(nodes, labels, classes=[0, 1])[1]


def purity_baseline(nodes: Sequence[Sequence[int]], pmask: np.ndarray, *,
                    n_permutations: int = 20, seed: int = 0) -> dict[str, Any]:
    """Concept purity of ``n_permutations`` shuffles of the mask (same prevalence)."""
    rng = np.random.default_rng(seed)
    values = [concept_purity(nodes, rng.permutation(pmask)) for _ in range(n_permutations)]
    finite = [v for v in values if v is not None]
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite)) if finite else None,
        "n_permutations": int(n_permutations),
    }


def graph_concepts(graph: Mapping[str, Any], masks: Mapping[str, np.ndarray], *,
                   n_permutations: int = 20, seed: int = 0) -> dict[str, Any]:
    """Composition, purity and purity baseline of every concept on one stored graph."""
    nodes = [list(n["members"]) for n in graph["nodes"]]
    pmasks = {name: point_mask(graph, m) for name, m in masks.items()}
    purity: dict[str, Any] = {}
    for name, pm in pmasks.items():
        purity[name] = {
            "purity": concept_purity(nodes, pm),
            "prevalence": float(pm.mean()) if len(pm) else None,
            "baseline": purity_baseline(nodes, pm, n_permutations=n_permutations, seed=seed),
        }
    return {
        "layer": graph.get("layer"),
        "node_ids": [str(n["id"]) for n in graph["nodes"]],
        "node_sizes": [len(n["members"]) for n in graph["nodes"]],
        "composition": node_composition(nodes, pmasks),
        "purity": purity,
    }


def concept_colours(graph_result: Any, masks: Mapping[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Per-point colour values (0/1) for a :class:`MapperGraphResult`, one per concept."""
    graph = {"layer": graph_result.layer, "point_sample": graph_result.point_sample,
             "lens": np.asarray(graph_result.lens).tolist(),
             "nodes": [{"members": list(n.members)} for n in graph_result.nodes]}
    return {name: point_mask(graph, m).astype(np.float64) for name, m in masks.items()}


def saved_concept_masks(run_dir: Any) -> dict[str, np.ndarray]:
    """Row masks of the concept set saved in ``RUN_DIR/concepts`` (empty when there is none)."""
    from pathlib import Path

    from deepprofile.concepts.sets import CONCEPTS_DIR, ConceptSet

    if not (Path(run_dir) / CONCEPTS_DIR / "concept_set.npz").exists():
        return {}
    concept_set = ConceptSet.load(run_dir)
    return {name: concept_set.mask(name) for name in concept_set.names}


__all__ = ["concept_colours", "concept_purity", "graph_concepts", "node_composition",
           "point_mask", "point_rows", "purity_baseline", "saved_concept_masks"]
