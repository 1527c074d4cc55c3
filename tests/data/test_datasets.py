"""Bundled digits, procedural shapes with concepts, adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.data import (
    ArrayDataset,
    DigitsDataset,
    ShapesDataset,
    dataset_from_spec,
    image_folder,
    load_dataset,
)
from deepprofile.errors import EmptyDatasetError, MissingFileError, ShapeError


def test_digits_split_is_fixed_and_disjoint():
    train, test = DigitsDataset("train"), DigitsDataset("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 540
    assert not set(train.source_indices) & set(test.source_indices)
    assert train[0][0].shape == (1, 32, 32)
    np.testing.assert_array_equal(DigitsDataset("test").source_indices, test.source_indices)
    assert sorted(set(test.targets.tolist())) == list(range(10))
    assert abs(float(train.images.mean())) < 1e-4  # standardised on the train split


def test_shapes_are_deterministic_and_record_concepts():
    a, b = ShapesDataset(n=40, seed=3), ShapesDataset(n=40, seed=3)
    for i in range(40):
        assert torch.equal(a[i][0], b[i][0])
        assert a.concepts(i) == b.concepts(i)
    assert not torch.equal(a[0][0], ShapesDataset(n=40, seed=4)[0][0])
    image, label = a[5]
    assert image.shape == (3, 32, 32) and 0 <= label < 4
    table = a.concept_table()
    assert set(table) >= {"shape", "colour", "texture", "radius", "cx", "cy", "marker"}


def test_shapes_marker_is_planted_where_recorded():
    ds = ShapesDataset(n=300, seed=0, spurious_class=2, marker_rate=0.9, marker_base_rate=0.05)
    table = ds.concept_table()
    for i in range(60):
        patch = ds[i][0][:, 1:4, 1:4]
        assert bool(torch.all(patch == 1.0)) == bool(table["marker"][i])
    on = table["marker"][table["label"] == 2].mean()
    off = table["marker"][table["label"] != 2].mean()
    assert on > 0.75 and off < 0.15  # rates 0.9 / 0.05 within sampling error


def test_shapes_pixels_follow_the_shape_mask():
    ds = ShapesDataset(n=20, seed=1, marker_rate=0.0, marker_base_rate=0.0)
    for i in range(20):
        c = ds.concepts(i)
        image = ds[i][0]
        assert float(image[:, c.cy, c.cx].max()) > 0.25  # the centre is coloured
        assert float(image[:, 0, 31].max()) < 0.3  # the corner is background


def test_spec_round_trip():
    for ds in (DigitsDataset("test"), ShapesDataset(n=10, seed=2, spurious_class=1)):
        again = dataset_from_spec(ds.spec())
        assert len(again) == len(ds)
        assert torch.equal(again[3][0], ds[3][0])


def test_adapters_and_errors(tmp_path):
    ds = ArrayDataset(np.zeros((4, 8, 8), dtype=np.float32), [0, 1, 1, 0])
    assert ds[0][0].shape == (1, 8, 8) and ds.class_names == ["0", "1"]
    with pytest.raises(ShapeError, match="labels"):
        ArrayDataset(np.zeros((4, 1, 8, 8)), [0, 1])
    with pytest.raises(EmptyDatasetError):
        ArrayDataset(np.zeros((0, 1, 8, 8)))
    with pytest.raises(EmptyDatasetError):
        ShapesDataset(n=0)
    with pytest.raises(MissingFileError, match="does not exist"):
        image_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDatasetError):
        image_folder(tmp_path / "empty")


def test_image_folder_reads_class_folders(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for j in range(2):
            Image.fromarray(np.full((40, 40, 3), 40 * j, dtype=np.uint8)).save(
                tmp_path / cls / f"{j}.png")
    ds = load_dataset("folder", root=tmp_path, image_size=32)
    assert len(ds) == 4 and ds.class_names == ["cat", "dog"]
    assert ds[0][0].shape == (3, 32, 32)
    assert len(dataset_from_spec(ds.spec())) == 4


def test_shapes_image_cache_is_a_bounded_ring(monkeypatch):
    import deepprofile.data.shapes as shapes_mod

    monkeypatch.setattr(shapes_mod, "CACHE_SIZE", 3)
    ds = shapes_mod.ShapesDataset(n=10, seed=4)
    fresh = [shapes_mod.render_shape(4, i)[0] for i in range(10)]
    for _ in range(2):  # second pass: every image was evicted and is rendered again
        for i in range(10):
            image, label = ds[i]
            np.testing.assert_array_equal(image.numpy(), fresh[i])
            assert label == ds.concepts(i).label
    assert ds._images.shape[0] == 3 and len(ds._slots) == 3
    ds[9][0].zero_()  # callers get copies: the cache is not altered
    np.testing.assert_array_equal(ds[9][0].numpy(), fresh[9])
