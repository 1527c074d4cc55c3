"""Class hypergraph of a hand-made influence table: edges, overlaps, components, exports."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from deepprofile.errors import DeepProfileError
from deepprofile.spectral.hypergraph import (
    ClassHypergraph,
    build_hypergraph,
    depth_trend,
)

TABLE = {"cat": [0, 1, 2], "dog": [1, 2, 3], "car": [5], "ship": [4, 5], "cow": [0, 1, 2, 3]}


def _build() -> ClassHypergraph:
    return build_hypergraph(TABLE, vertices=8, layer="layer2", shared_fraction=0.4)


def test_edges_overlaps_and_degrees():
    hg = _build()
    assert hg.edges == {k: sorted(v) for k, v in TABLE.items()}
    assert hg.sizes == {"cat": 3, "dog": 3, "car": 1, "ship": 2, "cow": 4}
    i = {c: k for k, c in enumerate(hg.classes)}
    assert hg.intersections[i["cat"], i["dog"]] == 2
    assert hg.overlaps[i["cat"], i["dog"]] == pytest.approx(2 / 4)
    assert hg.overlaps[i["cat"], i["cow"]] == pytest.approx(3 / 4)
    assert hg.overlaps[i["car"], i["ship"]] == pytest.approx(1 / 2)
    assert hg.overlaps[i["car"], i["cat"]] == 0.0
    np.testing.assert_allclose(hg.overlaps, hg.overlaps.T)
    np.testing.assert_allclose(np.diag(hg.overlaps), 1.0)
    assert hg.vertex_degree == {0: 2, 1: 3, 2: 3, 3: 2, 4: 1, 5: 2, 6: 0, 7: 0}
    assert hg.shared_min_classes == 2  # ceil(0.4 * 5)
    assert hg.shared_vertices == (0, 1, 2, 3, 5)
    assert hg.isolated_vertices == (6, 7)
    upper = hg.overlaps[np.triu_indices(5, 1)]
    assert hg.mean_jaccard == pytest.approx(upper.mean())


def test_s_connected_components():
    hg = _build()
    assert hg.components[1] == [["cat", "cow", "dog"], ["car", "ship"]]
    # s = 2: cat-dog share {1, 2}, cat-cow 3, dog-cow 3; car has 1 vertex (left out)
    assert hg.components[2] == [["cat", "cow", "dog"], ["ship"]]
    # s = 3: cat-cow share {0, 1, 2} and dog-cow {1, 2, 3}; ship and car are too small
    assert hg.components[3] == [["cat", "cow", "dog"]]
    assert hg.components[4] == [["cow"]]
    assert hg.n_components(1) == 2


def test_exports_and_json_round_trip():
    hg = _build()
    graph = hg.to_networkx()
    classes = {n for n, d in graph.nodes(data=True) if d["bipartite"] == 0}
    assert len(classes) == 5 and graph.number_of_nodes() == 5 + 8
    assert graph.number_of_edges() == sum(len(v) for v in TABLE.values())
    assert set(graph[("class", "ship")]) == {("sv", 4), ("sv", 5)}
    h = hg.to_hypernetx()
    assert sorted(h.edges) == sorted(TABLE)
    data = json.loads(json.dumps(hg.to_dict()))
    assert data["summary"]["n_edges"] == 5
    back = ClassHypergraph.from_dict(data)
    assert back.to_dict() == hg.to_dict()
    trend = depth_trend([hg, build_hypergraph({"a": [0], "b": [0]}, vertices=2, layer="l3")])
    assert trend["layer"] == ["layer2", "l3"] and trend["mean_jaccard"][1] == 1.0


def test_hypernetx_warnings_do_not_leak():
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _build().to_hypernetx()
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert list(warnings.filters) == filters_before


def test_bad_tables_are_clear_errors():
    with pytest.raises(DeepProfileError, match="No classes"):
        build_hypergraph({})
    with pytest.raises(DeepProfileError, match="not in the vertex set"):
        build_hypergraph({"a": [0, 9]}, vertices=4)
