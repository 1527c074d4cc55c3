"""Concepts on mapper graphs: composition and purity worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.concepts.links_mapper import (
    concept_purity,
    graph_concepts,
    node_composition,
    point_mask,
)
from deepprofile.errors import ShapeError


def test_composition_and_purity_by_hand():
    nodes = [[0, 1], [2, 3], [1, 2]]
    mask = np.array([1, 1, 0, 0], bool)
    assert node_composition(nodes, {"c": mask})["c"] == [1.0, 0.0, 0.5]
    # nodes holding a positive: node 0 (only positives, 1/1) and node 2 (mixed, 1/2)
    assert concept_purity(nodes, mask) == pytest.approx(0.75)
    # a concept that never mixes has purity 1; one in no node has None
    assert concept_purity([[0, 1], [2, 3]], mask) == 1.0
    assert concept_purity([[2, 3]], mask) is None


def test_point_sample_maps_points_to_rows():
    graph = {"layer": "l", "point_sample": [0, 0, 1, 1, 2, 2],
             "nodes": [{"id": "a", "members": [0, 1, 2]}, {"id": "b", "members": [3, 4, 5]}]}
    rows = np.array([True, False, True])
    np.testing.assert_array_equal(point_mask(graph, rows), [1, 1, 0, 0, 1, 1])
    out = graph_concepts(graph, {"c": rows}, n_permutations=5)
    assert out["composition"]["c"] == pytest.approx([2 / 3, 2 / 3])
    assert out["node_ids"] == ["a", "b"] and out["node_sizes"] == [3, 3]
    assert out["purity"]["c"]["prevalence"] == pytest.approx(4 / 6)
    with pytest.raises(ShapeError, match="another store"):
        point_mask(graph, np.ones(2, bool))


def test_separated_concept_beats_its_shuffle_baseline():
    nodes = [list(range(i, i + 10)) for i in range(0, 100, 10)]
    mask = np.arange(100) < 50  # nodes 0-4 positive, 5-9 negative
    graph = {"nodes": [{"id": str(i), "members": m} for i, m in enumerate(nodes)],
             "lens": [[0.0]] * 100}
    res = graph_concepts(graph, {"c": mask}, n_permutations=20, seed=0)["purity"]["c"]
    assert res["purity"] == 1.0
    assert res["baseline"]["mean"] == pytest.approx(0.5, abs=0.05)  # shuffled: nodes mix


def test_concept_colour_on_the_mapper_page_is_the_node_share():
    from deepprofile.concepts.links_mapper import concept_colours
    from deepprofile.errors import DeepProfileError
    from deepprofile.mapper import build_mapper
    from deepprofile.mapper.page import _GRAPH_MARKER, _json_at, render_mapper_page

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 6])
    labels = np.r_[np.zeros(60, int), np.ones(60, int)]
    res = build_mapper(X, labels=labels, intervals=6, overlap=0.3, min_samples=3)
    mask = rng.random(120) < 0.4
    colours = concept_colours(res, {"c": mask})
    page = render_mapper_page(res, extra_colours={"concept c": colours["c"]})
    assert "concept c" in page
    _, _, graph = _json_at(page, _GRAPH_MARKER)
    by_id = {n.id: n for n in res.nodes}
    for entry in graph["nodes"]:
        members = list(by_id[entry["name"]].members)
        assert entry["color"][0][-1] == pytest.approx(mask[members].mean())
    with pytest.raises(DeepProfileError, match="one value per point"):
        render_mapper_page(res, extra_colours={"bad": np.ones(3)})
