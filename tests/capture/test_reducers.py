"""Each reduction against a manual computation on a hand-built conv net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture import ActivationRecorder, parse_reduction, reduce
from deepprofile.capture.reducers import sample_positions
from deepprofile.errors import ShapeError


def _conv1_output(net, images):
    with torch.no_grad():
        return net.conv1(images)  # (N, 2, 8, 8)


@pytest.mark.parametrize("spec", ["mean", "max", "max_position", "flatten", "positions:5"])
def test_recorder_reductions_match_manual(tiny_net, tiny_images, spec):
    raw = _conv1_output(tiny_net, tiny_images).numpy()
    idx = np.arange(100, 110)
    with ActivationRecorder(tiny_net, ["conv1"], spec, seed=7) as rec:
        got = rec(tiny_images, sample_indices=idx).activations["conv1"].numpy()
    n, c = raw.shape[:2]
    flat = raw.reshape(n, c, -1)
    if spec == "mean":
        expected = flat.mean(axis=2)
    elif spec == "max":
        expected = flat.max(axis=2)
    elif spec == "flatten":
        expected = raw
    elif spec == "max_position":
        expected = np.stack([
            flat[i, :, int(np.argmax(np.linalg.norm(flat[i], axis=0)))] for i in range(n)
        ])
    else:
        expected = np.stack([
            flat[i][:, sample_positions(7, int(idx[i]), 64, 5)].T for i in range(n)
        ])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_positions_depend_only_on_seed_and_index(tiny_net, tiny_images):
    raw = _conv1_output(tiny_net, tiny_images)
    idx = np.arange(10)
    whole = reduce(raw, "positions:4", sample_indices=idx, seed=3)
    halves = torch.cat([
        reduce(raw[:4], "positions:4", sample_indices=idx[:4], seed=3),
        reduce(raw[4:], "positions:4", sample_indices=idx[4:], seed=3),
    ])
    torch.testing.assert_close(whole, halves, rtol=0, atol=0)
    other = reduce(raw, "positions:4", sample_indices=idx, seed=4)
    assert not torch.equal(whole, other)
    picks = sample_positions(3, 5, 64, 4)
    assert len(set(picks.tolist())) == 4  # without replacement


def test_linear_outputs_reduce_to_themselves():
    out = torch.randn(5, 7)
    for spec in ("mean", "max", "max_position"):
        torch.testing.assert_close(reduce(out, spec), out)


def test_parse_and_errors():
    assert str(parse_reduction("positions:8")) == "positions:8"
    assert parse_reduction("positions").k == 16
    with pytest.raises(ValueError, match="Unknown reduction"):
        parse_reduction("median")
    with pytest.raises(ShapeError, match="only 4 spatial positions"):
        reduce(torch.randn(2, 3, 2, 2), "positions:5")
    with pytest.raises(ShapeError, match="batch and a channel"):
        reduce(torch.randn(3), "mean")
