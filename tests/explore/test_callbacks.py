"""The selection callback across two runs, called directly: the nodes of run B holding the
images selected in run A (matched by dataset index) are the ones ringed."""

from __future__ import annotations

from dataclasses import asdict

from deepprofile.explore import MapperParams, RunData
from deepprofile.explore.callbacks import _select
from deepprofile.explore.elements import HIGHLIGHT


def test_selection_in_run_a_rings_the_nodes_of_run_b_with_the_same_images(explore_runs):
    params = MapperParams(intervals=12, min_samples=3)
    runs = {"a": RunData.open(explore_runs["a"]), "b": RunData.open(explore_runs["b"])}
    views = {k: runs[k].graph("layer3", params) for k in runs}
    data = {k: {"run": k, "layer": "layer3", "params": asdict(params)} for k in runs}
    node = views["a"].result.nodes[0]
    out = _select(runs, "graph-a", [{"id": views["a"].element_id(node.id)}], [],
                  data["a"], data["b"], None)
    details, style_a, style_b, cap_a, cap_b, selection, message = out
    images = set(runs["a"].dataset_indices[views["a"].node_rows(node.id)].tolist())
    expected = [n.id for n in views["b"].result.nodes
                if images & set(runs["b"].dataset_indices[views["b"].node_rows(n.id)].tolist())]
    ringed = [sel for s in style_b if s["style"].get("border-color") == HIGHLIGHT
              for sel in s["selector"].split(", ")]
    assert sorted(ringed) == sorted(f'node[id = "{views["b"].element_id(i)}"]'
                                    for i in expected)
    assert cap_b.startswith(f"{len(expected)} of {len(views['b'].node_ids)} nodes of layer3")
    assert selection == {"source": "a"} and message == "" and cap_a == ""
    assert all(s["style"].get("border-color") != HIGHLIGHT for s in style_a)
    # a stale selection (an id of a graph since redrawn) shows nothing
    stale = _select(runs, "graph-a", [{"id": "g0000-" + node.id}], [], data["a"], data["b"],
                    None)
    assert stale[5] == {"source": None}
    assert all(s["style"].get("border-color") != HIGHLIGHT for s in stale[2])
