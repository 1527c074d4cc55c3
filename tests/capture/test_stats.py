"""Activation statistics against hand-made arrays."""

from __future__ import annotations

import numpy as np

from deepprofile.capture.stats import CaptureStats, capture_stats, layer_stats
from deepprofile.results import jsonable


def test_dead_and_saturated_units():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(100, 4)).astype(np.float32)
    values[:, 1] = 0.0  # dead
    values[:, 2] = 3.0  # constant, non-zero: saturated
    stats = layer_stats(values, "l", "mean")
    assert stats.dead_units == [1] and stats.saturated_units == [2]
    assert stats.n_units == 4
    np.testing.assert_allclose(stats.unit_mean[2], 3.0)
    assert abs(stats.fraction_zero - 0.25) < 1e-9


def test_spatial_and_positions_layouts():
    maps = np.zeros((5, 3, 2, 2), dtype=np.float32)
    maps[:, 0] = np.arange(20).reshape(5, 2, 2)
    stats = layer_stats(maps, "m", "flatten")
    assert stats.n_units == 3 and stats.dead_units == [1, 2]
    np.testing.assert_allclose(stats.unit_mean[0], np.arange(20).mean(), rtol=1e-6)
    points = np.ones((5, 4, 3), dtype=np.float32)
    points[:, :, 0] = np.arange(20).reshape(5, 4)
    pstats = layer_stats(points, "p", "positions:4")
    assert pstats.n_units == 3 and pstats.saturated_units == [1, 2]


def test_capture_stats_round_trip(tiny_net, tiny_dataset, tmp_path):
    from deepprofile.capture import capture_to_store

    store = capture_to_store(tiny_net, tiny_dataset, ["conv1", "fc"], tmp_path / "s.zarr",
                             batch_size=10, quiet=True)
    result = capture_stats(store)
    assert [row.layer for row in result.layers] == ["conv1", "fc"]
    again = CaptureStats.from_dict(jsonable(result.to_dict()))
    assert again == result
