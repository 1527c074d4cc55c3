"""Concept sets: shapes ground truth, class groups, arrays, folders, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.concepts.sets import (
    ConceptSet,
    array_concept,
    class_group_concept,
    folder_concept,
    parse_concept_spec,
    shapes_concepts,
    shapes_regions,
)
from deepprofile.data import ShapesDataset
from deepprofile.errors import ConceptDataError, DeepProfileError, UnknownConceptError


def test_shapes_concepts_match_the_dataset_table():
    ds = ShapesDataset(40, seed=3, marker_rate=0.7)
    table = ds.concept_table()
    cs = shapes_concepts(range(40), seed=3, marker_rate=0.7)
    np.testing.assert_array_equal(cs.mask("marker"), table["marker"])
    np.testing.assert_array_equal(cs.mask("colour:red"), table["colour"] == "red")
    np.testing.assert_array_equal(cs.mask("shape:cross"), table["label"] == 3)
    np.testing.assert_array_equal(cs.mask("size:large"), table["size_bin"] == "large")
    assert cs.sources["marker"]["kind"] == "shapes"
    # every image has exactly one shape, colour, texture and size
    for family in ("shape", "colour", "texture", "size"):
        rows = [i for i, n in enumerate(cs.names) if n.startswith(family + ":")]
        assert (cs.masks[rows].sum(axis=0) == 1).all()


def test_shapes_regions_marker_and_shape():
    regions = shapes_regions(range(3), "marker")
    assert regions.shape == (3, 32, 32) and regions.sum() == 27
    ds = ShapesDataset(3, seed=0)
    shape = shapes_regions(range(3), "shape:circle", seed=0)
    for i in range(3):
        img = ds[i][0].numpy()
        assert (img[:, shape[i]].max(axis=0) > 0.2).mean() > 0.6  # the shape's pixels are lit


def test_save_load_roundtrip_and_dict(tmp_path):
    cs = shapes_concepts(range(30)).merge(array_concept("flag", np.arange(30) % 3 == 0))
    cs.save(tmp_path)
    back = ConceptSet.load(tmp_path)
    assert back.names == cs.names
    np.testing.assert_array_equal(back.masks, cs.masks)
    again = ConceptSet.from_dict(cs.to_dict())
    np.testing.assert_array_equal(again.masks, cs.masks)
    assert again.sources == cs.sources


def test_class_group_concept_by_name_and_id():
    labels = np.array([0, 1, 2, 3, 1])
    cs = class_group_concept("animals", ["cat", "2"], labels, ["dog", "cat", "horse", "car"])
    np.testing.assert_array_equal(cs.mask("animals"), [False, True, True, False, True])
    assert cs.sources["animals"]["classes"] == ["cat", "horse"]


def test_unknown_concept_name_lists_close_matches():
    cs = shapes_concepts(range(10))
    with pytest.raises(UnknownConceptError, match="Did you mean: marker") as info:
        cs.mask("markr")
    assert "\n" not in str(info.value)


def test_unknown_class_in_group_names_the_classes():
    with pytest.raises(UnknownConceptError, match="Classes: dog, cat"):
        class_group_concept("pets", ["cta"], np.array([0, 1]), ["dog", "cat"])


def test_concept_larger_than_the_dataset_is_a_clear_error():
    with pytest.raises(ConceptDataError, match="one value per store row") as info:
        array_concept("big", np.ones(50, bool), n_samples=40)
    assert "\n" not in str(info.value)
    with pytest.raises(ConceptDataError, match="n_concepts"):
        ConceptSet(("a",), np.ones((2, 5), bool), {})


def test_empty_concept_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConceptDataError, match="holds no images") as info:
        folder_concept("stripes", tmp_path / "empty")
    assert "\n" not in str(info.value)
    with pytest.raises(ConceptDataError, match="does not exist"):
        parse_concept_spec(f"x={tmp_path / 'missing'}", labels=np.zeros(3), class_names=None)


def test_folder_concept_lists_images(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    cs = folder_concept("reds", tmp_path)
    assert cs.names == () and cs.all_names == ("reds",)
    assert len(cs.folder("reds").positives) == 3
    with pytest.raises(ConceptDataError, match="folder concept"):
        cs.mask("reds")


def test_bad_concept_spec():
    with pytest.raises(DeepProfileError, match="NAME=DIR"):
        parse_concept_spec("justaname", labels=np.zeros(3), class_names=None)


def test_shapes_concepts_on_a_non_shapes_store_names_the_fix():
    class FakeStore:
        path = "run/activations.zarr"
        metadata = {"dataset": {"name": "digits"}}
        indices = np.arange(3)

    with pytest.raises(ConceptDataError, match="--concept"):
        shapes_concepts(FakeStore())
