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


def _reference(values: np.ndarray, reduction: str) -> dict:
    """In-memory float64 statistics, computed independently of the streaming code."""
    v = values.astype(np.float64)
    if reduction.startswith("positions"):
        units = v.reshape(-1, v.shape[-1])
    else:
        units = np.moveaxis(v.reshape(v.shape[0], v.shape[1], -1), 1, -1).reshape(
            -1, v.shape[1])
    return {"mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max(),
            "fraction_zero": (v == 0).mean(), "unit_mean": units.mean(0),
            "unit_std": units.std(0)}


def test_streaming_stats_equal_in_memory():
    from deepprofile.capture.stats import stream_layer_stats

    rng = np.random.default_rng(3)
    cases = {"mean": (37, 5), "flatten": (37, 4, 3, 2), "positions:3": (37, 3, 6)}
    for reduction, shape in cases.items():
        values = (rng.normal(size=shape) * 50 + 1000).astype(np.float32)  # large offset
        values[values < 990] = 0.0
        ref = _reference(values, reduction)
        blocks = [values[i:i + 8] for i in range(0, len(values), 8)]  # uneven last block
        streamed = stream_layer_stats(blocks, "l", reduction)
        for key in ("mean", "std", "min", "max", "fraction_zero"):
            np.testing.assert_allclose(getattr(streamed, key), ref[key], rtol=1e-12,
                                       err_msg=f"{reduction} {key}")
        np.testing.assert_allclose(streamed.unit_mean, ref["unit_mean"], atol=5e-7)
        np.testing.assert_allclose(streamed.unit_std, ref["unit_std"], atol=5e-7)
        whole = layer_stats(values, "l", reduction)
        assert (whole.dead_units, whole.saturated_units) == (streamed.dead_units,
                                                           streamed.saturated_units)


def test_capture_stats_never_loads_a_whole_layer(tiny_net, tiny_dataset, tmp_path,
                                                 monkeypatch):
    from deepprofile.capture import ActivationStore, capture_to_store

    store = capture_to_store(tiny_net, tiny_dataset, ["conv1", "fc"], tmp_path / "s.zarr",
                             reductions="flatten", batch_size=10, chunk_size=10, quiet=True)
    expected = {row.layer: row for row in capture_stats(store).layers}
    seen = []
    real = ActivationStore.iter_layer

    def spy(self, name, batch_size=None):
        for start, block in real(self, name, batch_size):
            seen.append(len(block))
            yield start, block

    def whole(self, name):
        raise AssertionError("capture_stats read a whole layer")

    monkeypatch.setattr(ActivationStore, "iter_layer", spy)
    monkeypatch.setattr(ActivationStore, "layer", whole)
    streamed = capture_stats(ActivationStore.open(tmp_path / "s.zarr"))
    assert max(seen) == 10 and sum(seen) == 2 * 50
    for row in streamed.layers:
        values = np.concatenate([block for _, block in real(store, row.layer)])
        np.testing.assert_allclose(row.std, _reference(values, row.reduction)["std"],
                                   rtol=1e-10)
        assert row == expected[row.layer]
