"""Point clouds: max_position against a manual argmax, positions, sampling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist
from torch import nn

from deepprofile.capture import hook_count
from deepprofile.capture.reducers import sample_positions
from deepprofile.capture.runner import capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.errors import NonFiniteActivationError, ShapeError, UnknownLayerError
from deepprofile.topology.clouds import (
    cloud_from_array,
    clouds_from_model,
    clouds_from_store,
    farthest_point_sampling,
    median_pairwise_distance,
    stratified_indices,
    subsample_indices,
)


class HandConv(nn.Module):
    """conv(1->3, 3x3, fixed weights) -> relu -> conv(3->4, 1x1, fixed) -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 1, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([
                [[[0, 0, 0], [0, 1, 0], [0, 0, 0]]],      # identity
                [[[1, 0, -1], [2, 0, -2], [1, 0, -1]]],   # Sobel x
                [[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]],   # Sobel y
            ], dtype=torch.float32))
            self.conv2.weight.copy_(torch.arange(12, dtype=torch.float32).reshape(4, 3, 1, 1) / 6)
            self.conv2.bias.copy_(torch.tensor([0.0, -1.0, 0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv2(self.act(self.conv1(x)))), 1))


@pytest.fixture
def hand_data() -> ArrayDataset:
    rng = np.random.default_rng(3)
    images = rng.normal(size=(40, 1, 6, 6)).astype(np.float32)
    labels = np.repeat(np.arange(4), 10)
    return ArrayDataset(images, labels, name="hand")


def _manual_max_position(model: HandConv, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        fmap = model.conv2(model.act(model.conv1(images))).numpy()  # (N, C, H, W)
    out = []
    for sample in fmap:
        norms = np.sqrt((sample**2).sum(axis=0))  # (H, W)
        h, w = np.unravel_index(np.argmax(norms), norms.shape)
        out.append(sample[:, h, w])
    return np.array(out)


def test_max_position_cloud_equals_manual_argmax(hand_data: ArrayDataset) -> None:
    torch.manual_seed(0)
    model = HandConv().eval()
    clouds = clouds_from_model(model, hand_data, ["conv2"], kind="max_position",
                               n_points=None, normalize="none", batch_size=16)
    expected = _manual_max_position(model, hand_data.images)
    np.testing.assert_allclose(clouds["conv2"].points, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clouds["conv2"].labels, hand_data.targets.numpy())
    assert hook_count(model) == 0


def test_max_position_from_flatten_store_matches_max_position_store(
    hand_data: ArrayDataset, tmp_path
) -> None:
    model = HandConv().eval()
    capture_to_store(model, hand_data, ["conv2"], tmp_path / "flat.zarr",
                     reductions="flatten", quiet=True)
    capture_to_store(model, hand_data, ["conv2"], tmp_path / "mp.zarr",
                     reductions="max_position", quiet=True)
    kw = dict(kind="max_position", n_points=None, normalize="none")
    flat = clouds_from_store(tmp_path / "flat.zarr", **kw)["conv2"]
    stored = clouds_from_store(tmp_path / "mp.zarr", **kw)["conv2"]
    np.testing.assert_allclose(flat.points, stored.points, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flat.points, _manual_max_position(model, hand_data.images),
                               rtol=1e-5, atol=1e-6)
    # the flatten path also knows where each point came from
    assert flat.positions is not None and flat.positions.max() < 36


def test_positions_cloud_keeps_image_label_and_position(hand_data, tmp_path) -> None:
    model = HandConv().eval()
    capture_to_store(model, hand_data, ["conv2"], tmp_path / "pos.zarr",
                     reductions="positions:5", quiet=True, seed=7)
    capture_to_store(model, hand_data, ["conv2"], tmp_path / "flat.zarr",
                     reductions="flatten", quiet=True, seed=7)
    kw = dict(kind="positions", n_points=None, normalize="none", positions_k=5)
    pos = clouds_from_store(tmp_path / "pos.zarr", **kw)["conv2"]
    flat = clouds_from_store(tmp_path / "flat.zarr", **kw)["conv2"]
    assert pos.n_points == 40 * 5
    np.testing.assert_array_equal(pos.sample_ids, np.repeat(np.arange(40), 5))
    np.testing.assert_array_equal(pos.labels, np.repeat(hand_data.targets.numpy(), 5))
    expected_pos = np.concatenate([sample_positions(7, i, 36, 5) for i in range(40)])
    np.testing.assert_array_equal(pos.positions, expected_pos)
    np.testing.assert_allclose(pos.points, flat.points, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        fmap = model.conv2(model.act(model.conv1(hand_data.images))).numpy().reshape(40, 4, 36)
    np.testing.assert_allclose(pos.points[7], fmap[1, :, expected_pos[7]], rtol=1e-5, atol=1e-6)


def test_run_folder_picks_the_store_with_the_needed_reduction(hand_data, tmp_path) -> None:
    model = HandConv().eval()
    capture_to_store(model, hand_data, ["conv1", "conv2"], tmp_path / "activations.zarr",
                     reductions="mean", quiet=True)
    capture_to_store(model, hand_data, ["conv1", "conv2"],
                     tmp_path / "activations_maxpos.zarr", reductions="max_position", quiet=True)
    mp = clouds_from_store(tmp_path, kind="max_position", n_points=None)
    img = clouds_from_store(tmp_path, ["conv*"], kind="image", n_points=None)
    assert list(mp) == ["conv1", "conv2"] and list(img) == ["conv1", "conv2"]
    assert mp["conv2"].provenance["reduction"] == "max_position"
    assert mp["conv2"].provenance["store"].endswith("activations_maxpos.zarr")
    assert img["conv2"].provenance["reduction"] == "mean"


def test_errors_are_clear(hand_data, tmp_path) -> None:
    model = HandConv().eval()
    capture_to_store(model, hand_data, ["conv2"], tmp_path / "m.zarr", reductions="mean",
                     quiet=True)
    with pytest.raises(UnknownLayerError, match="conv2"):
        clouds_from_store(tmp_path / "m.zarr", ["conv3"], kind="image")
    with pytest.raises(ShapeError, match="max_position"):
        clouds_from_store(tmp_path / "m.zarr", ["conv2"], kind="max_position")
    # a mean-pooled store cannot make max_position clouds: the error names the cloud that works
    with pytest.raises(ShapeError, match="Use --cloud image"):
        clouds_from_store(tmp_path / "m.zarr", kind="max_position")
    with pytest.raises(ShapeError, match="at least"):
        cloud_from_array(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="too small"):
        cloud_from_array(np.random.default_rng(0).normal(size=(20, 3)), n_points=2)
    bad = np.random.default_rng(0).normal(size=(20, 3))
    bad[4, 1] = np.nan
    with pytest.raises(NonFiniteActivationError, match="row"):
        cloud_from_array(bad)


def test_live_capture_removes_hooks_when_forward_raises(hand_data) -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = HandConv()
    model.fc = Boom()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        clouds_from_model(model, hand_data, ["conv2"], kind="max_position")
    assert hook_count(model) == 0
    assert model.training


def test_seeded_subsampling_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    labels = rng.integers(0, 3, size=300)
    for sampler in ("random", "stratified", "fps"):
        a = subsample_indices(x, labels, 50, sampler, seed=4)
        b = subsample_indices(x, labels, 50, sampler, seed=4)
        c = subsample_indices(x, labels, 50, sampler, seed=5)
        np.testing.assert_array_equal(a, b)
        assert len(np.unique(a)) == 50
        assert not np.array_equal(np.sort(a), np.sort(c))
    cloud_a = cloud_from_array(x, labels=labels, n_points=40, normalize="median", seed=1)
    cloud_b = cloud_from_array(x, labels=labels, n_points=40, normalize="median", seed=1)
    np.testing.assert_array_equal(cloud_a.points, cloud_b.points)
    np.testing.assert_array_equal(cloud_a.rows, cloud_b.rows)


def test_stratified_keeps_label_shares() -> None:
    labels = np.array([0] * 500 + [1] * 300 + [2] * 200)
    idx = stratified_indices(labels, 100, seed=0)
    counts = np.bincount(labels[idx])
    np.testing.assert_array_equal(counts, [50, 30, 20])


def test_farthest_point_sampling_is_max_min() -> None:
    x = np.random.default_rng(1).normal(size=(200, 3))
    order = farthest_point_sampling(x, 25, seed=0)
    assert len(np.unique(order)) == 25
    radii = []
    for step in range(1, 25):
        dist_to_chosen = cdist(x, x[order[:step]]).min(axis=1)
        # each new landmark is a point farthest from those chosen so far
        assert dist_to_chosen[order[step]] == pytest.approx(dist_to_chosen.max(), rel=1e-9)
        radii.append(dist_to_chosen.max())
    assert np.all(np.diff(radii) <= 1e-12)  # covering radius never grows
    # greedy landmarks cover better than a random sample of the same size
    rand = np.random.default_rng(0).choice(200, 25, replace=False)
    assert cdist(x, x[order]).min(axis=1).max() < cdist(x, x[rand]).min(axis=1).max()


def test_normalisations() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)) * np.array([1, 10, 100, 1, 1, 5]) + 3
    med = cloud_from_array(x, normalize="median")
    assert np.median(pdist(med.points)) == pytest.approx(1.0, rel=1e-9)
    assert med.scale == pytest.approx(np.median(pdist(x)), rel=1e-9)
    std = cloud_from_array(x, normalize="standardize")
    np.testing.assert_allclose(std.points.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(std.points.std(axis=0), 1, rtol=1e-9)
    none = cloud_from_array(x, normalize="none")
    np.testing.assert_array_equal(none.points, x)
    # the median comes from a seeded sample for large clouds, close to the exact one
    big = rng.normal(size=(5000, 4))
    assert median_pairwise_distance(big) == pytest.approx(np.median(pdist(big[:3000])), rel=0.03)


def test_cloud_round_trips_through_dict() -> None:
    cloud = cloud_from_array(np.random.default_rng(0).normal(size=(30, 4)), layer="x",
                             n_points=20, normalize="median")
    again = type(cloud).from_dict(cloud.to_dict())
    np.testing.assert_array_equal(again.points, cloud.points)
    assert again.describe() == cloud.describe()
