"""The explorer's data layer: parameter checks, graphs equal to the package's mapper,
the cache, subsampling, node colours, linked nodes, concepts, attribution maps, export."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.errors import MissingFileError, UnknownLayerError
from deepprofile.explore import ExploreInputError, MapperParams, RunData
from deepprofile.explore.data import linked_nodes, node_values

PARAMS = MapperParams(intervals=12, overlap=0.3, min_samples=3)


@pytest.fixture(scope="module")
def run_a(explore_runs) -> RunData:
    return RunData.open(explore_runs["a"])


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("intervals", "0", "intervals must be a whole number in [1, 200]"),
    ("intervals", "2.5", "intervals must be a whole number"),
    ("overlap", "1.5", "overlap must be in [0, 0.95]"),
    ("overlap", "abc", "overlap must be a number"),
    ("eps", "-1", "eps must be > 0"),
    ("min_samples", "", "min_samples is empty"),
    ("subsample", "3", "subsample must be a whole number in [10,"),
    ("lens", "bogus", "Unknown lens 'bogus'"),
])
def test_ui_values_out_of_range_raise_one_clear_error(field, value, needle):
    raw = {"lens": "l2norm", "intervals": "10", "overlap": "0.3", "eps": "",
           "min_samples": "5", "subsample": ""}
    raw[field] = value
    with pytest.raises(ExploreInputError) as info:
        MapperParams.from_ui(**raw)
    assert needle in str(info.value)


def test_ui_values_parse():
    p = MapperParams.from_ui("PCA", "12", "0.25", "1.5", "4", "100")
    assert p == MapperParams(lens="pca", intervals=12, overlap=0.25, eps=1.5, min_samples=4,
                             subsample=100)
    assert MapperParams.from_ui("l2norm", 10, 0.3, None, 5, " ").subsample is None


def test_graph_is_the_package_mapper_on_the_store_and_cached(run_a):
    from deepprofile.mapper import MapperGraph

    view = run_a.graph("layer3", PARAMS)
    ref = MapperGraph(**PARAMS.builder_kwargs()).fit(
        np.asarray(run_a.store.layer("layer3")), labels=run_a.labels).result_
    assert [n.members for n in view.result.nodes] == [n.members for n in ref.nodes]
    assert [e[:2] for e in view.result.edges] == [e[:2] for e in ref.edges]
    assert view.result.stats.n_nodes > 0
    assert run_a.cached("layer3", PARAMS)
    assert run_a.graph("layer3", PARAMS) is view  # cache hit: the same object
    other = run_a.graph("layer3", MapperParams(intervals=5, min_samples=3))
    assert other is not view and other.result.params["intervals"] == 5


def test_cache_evicts_least_recent(explore_runs):
    run = RunData.open(explore_runs["a"], cache_size=2)
    first = run.graph("layer1", PARAMS)
    run.graph("layer2", PARAMS)
    run.graph("layer1", PARAMS)  # refreshes layer1
    run.graph("layer3", PARAMS)  # evicts layer2
    assert run.cached("layer1", PARAMS) and not run.cached("layer2", PARAMS)
    assert run.graph("layer1", PARAMS) is first


def test_subsample_is_seeded_and_maps_points_to_store_rows(run_a):
    p = MapperParams(intervals=8, min_samples=3, subsample=60)
    view = run_a.graph("layer2", p)
    assert view.result.n_points == 60 and len(np.unique(view.rows)) == 60
    assert np.all(np.diff(view.rows) > 0) and view.rows.max() < run_a.n_rows
    again = RunData.open(run_a.path).graph("layer2", p)
    assert np.array_equal(again.rows, view.rows)
    node = view.result.nodes[0]
    # a node's rows are the store rows of its points: the activations match
    acts = np.asarray(run_a.store.layer("layer2"))
    sub = acts[view.rows]
    assert np.array_equal(sub[list(node.members)], acts[view.node_rows(node.id)])


def test_node_colours_match_an_independent_computation(run_a):
    from scipy.special import softmax

    view = run_a.graph("layer3", PARAMS)
    cols = run_a.columns()
    conf = softmax(np.asarray(run_a.store.logits, dtype=np.float64), axis=1).max(axis=1)
    got = node_values(view, cols["confidence"])
    for node, value in zip(view.result.nodes, got, strict=True):
        assert value == pytest.approx(conf[list(node.members)].mean(), rel=1e-12)
    labels = node_values(view, cols["label"])
    assert labels == [float(n.majority_label) for n in view.result.nodes]
    correct = run_a.predictions == run_a.labels
    assert node_values(view, cols["correct"]) == pytest.approx(
        [correct[list(n.members)].mean() for n in view.result.nodes])


def test_linked_nodes_are_those_sharing_images(run_a):
    a = run_a.graph("layer3", PARAMS)
    b = run_a.graph("layer2", PARAMS)
    rows = a.rows_of([a.result.nodes[0].id])
    got = linked_nodes(b, rows)
    expected = {}
    for node in b.result.nodes:
        members = set(b.rows[list(node.members)].tolist())
        shared = members & set(rows.tolist())
        if shared:
            expected[node.id] = len(shared) / len(members)
    assert got == pytest.approx(expected) and got


def test_two_runs_link_through_dataset_indices(explore_runs, run_a):
    run_b = RunData.open(explore_runs["b"])
    rows = np.array([3, 7, 11])
    back = run_b.rows_for_dataset_indices(run_a.dataset_indices[rows])
    assert np.array_equal(run_b.dataset_indices[back], run_a.dataset_indices[rows])
    assert "concept:below 5" not in run_b.columns()  # run B has no concept set


def test_concepts_and_mean_attribution(explore_runs, run_a):
    labels = run_a.labels
    rows = np.flatnonzero(labels < 3)
    comp = dict((n, (s, t)) for n, s, t in run_a.concept_composition(rows))
    assert comp["below 5"] == (1.0, pytest.approx((labels < 5).mean()))
    assert comp["even digit"][0] == pytest.approx((labels[rows] % 2 == 0).mean())
    maps = np.load(explore_runs["a"] / "attribution" / "saliency.npy")
    attr_rows = np.arange(0, len(labels), 13)[:12]
    picked = np.array([attr_rows[1], attr_rows[4], 5])  # row 5 has no map
    mean, k, method = run_a.mean_attribution(picked)
    assert k == 2 and method == "saliency"
    np.testing.assert_allclose(mean, np.abs(maps[[1, 4]]).sum(axis=1).mean(axis=0), rtol=1e-6)
    assert run_a.mean_attribution([5]) is None
    l1 = run_a.columns()["attribution:l1"].values
    assert np.isnan(l1[5]) and l1[attr_rows[2]] == pytest.approx(np.abs(maps[2]).sum(), 1e-5)


def test_thumbnails_come_from_the_run_dataset(run_a):
    thumbs = run_a.thumbnails([0, 5])
    assert set(thumbs) == {0, 5} and thumbs[0].startswith("data:image/png;base64,")


def test_export_writes_the_offline_mapper_page(run_a, tmp_path):
    from deepprofile.mapper.page import external_resources

    path = run_a.export(run_a.graph("layer3", PARAMS), tmp_path)
    page = path.read_text()
    assert path.name.startswith("layer3.l2norm-i12") and external_resources(page) == []
    assert "data:image/png;base64," in page


def test_bad_runs_and_layers(explore_runs, run_a):
    with pytest.raises(MissingFileError, match="Run `deepprofile capture` first"):
        RunData.open(explore_runs["empty"])
    with pytest.raises(UnknownLayerError, match="Did you mean: layer3"):
        run_a.check_layer("layer33")


def test_dataset_columns_become_colour_options(explore_runs):
    run = RunData.open(explore_runs["a"])
    n = int(run.dataset_indices.max()) + 1

    class Shapes:  # what ShapesDataset.concept_table gives: one array per concept
        def concept_table(self):
            return {"label": np.zeros(n), "radius": np.arange(n) % 7,
                    "colour": np.array(["red", "blue", "green"])[np.arange(n) % 3]}

    run._dataset = Shapes()
    cols = run.columns()
    assert "column:label" not in cols and not cols["column:radius"].categorical
    colour = cols["column:colour"]
    assert colour.categorical and colour.categories == ("blue", "green", "red")
    expected = np.array(["red", "blue", "green"])[run.dataset_indices % 3]
    assert [colour.categories[int(c)] for c in colour.values] == expected.tolist()
    np.testing.assert_array_equal(cols["column:radius"].values, run.dataset_indices % 7)
