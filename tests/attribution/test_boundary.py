"""BIG: the boundary search against a linear model's known boundary distance, and IG from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.attribution.boundary import big_attribute, find_boundary
from deepprofile.capture import hook_count


def linear_model(seed: int = 0, d: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    return model.eval()


def margins(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact L2 and Linf distances to the decision boundary of a 2-class linear model."""
    lin = model[1]
    w = (lin.weight[0] - lin.weight[1]).detach()
    b = float((lin.bias[0] - lin.bias[1]).detach())
    m = (x.flatten(1) @ w + b).detach().numpy()
    return np.abs(m) / float(w.norm()), np.abs(m) / float(w.abs().sum()), m


GRID_L2 = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
GRID_LINF = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


def test_smallest_flipping_radius_matches_the_true_distance():
    model = linear_model()
    x = torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    d2, dinf, _ = margins(model, x)
    keep = [i for i in range(len(x))  # radii clear of a grid value, so PGD's answer is exact
            if min(abs(d2[i] - g) / g for g in GRID_L2) > 0.05
            and min(abs(dinf[i] - g) / g for g in GRID_LINF) > 0.05]
    x, d2, dinf = x[keep], d2[keep], dinf[keep]
    assert len(x) >= 6
    for norm, grid, dist in (("L2", GRID_L2, d2), ("Linf", GRID_LINF, dinf)):
        res = find_boundary(model, x, norms=(norm,), eps={norm: grid}, steps=20)
        for i in range(len(x)):
            larger = [g for g in grid if g > dist[i]]
            if larger:
                assert res.found[i] and res.eps[i] == larger[0] and res.norm[i] == norm
                assert res.adversarial[i] != res.original[i]
            else:
                assert not res.found[i] and np.isnan(res.eps[i])
    assert hook_count(model) == 0


def test_big_is_ig_from_the_boundary_point():
    model = linear_model(1)
    x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    res = big_attribute(model, x, norms=("L2",), eps={"L2": GRID_L2}, n_steps=8)
    found = np.array(res.extra["boundary"]["found"])
    assert found.all()
    lin = model[1]
    t = torch.as_tensor(res.targets)
    points = torch.from_numpy(res.baselines)
    with torch.no_grad():
        # IG is exact for a linear model: (x - x') * w_t, and sums to f_t(x) - f_t(x')
        expected = (x - points) * lin.weight[t].reshape(x.shape)
        gap = model(x).gather(1, t[:, None]) - model(points).gather(1, t[:, None])
        assert (model(points).argmax(1) != model(x).argmax(1)).all()
    np.testing.assert_allclose(res.attributions, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.attributions.reshape(6, -1).sum(1), gap.squeeze(1).numpy(),
                               rtol=1e-4, atol=1e-6)
    assert res.method == "big" and res.baseline.startswith("boundary")


@pytest.mark.parametrize("fallback", ["zeros", "nan"])
def test_images_without_a_boundary_point_are_reported(fallback):
    model = linear_model(3)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    d2, _, _ = margins(model, x)
    tiny = float(d2.min()) / 4  # no radius reaches the boundary
    res = big_attribute(model, x, norms=("L2",), eps={"L2": (tiny,)}, n_steps=8,
                        fallback=fallback)
    report = res.extra["boundary"]
    assert report["n_found"] == 0 and report["not_found"] == [0, 1, 2, 3, 4]
    assert report["eps"] == [None] * 5
    if fallback == "nan":
        assert np.isnan(res.attributions).all()
    else:
        with torch.no_grad():
            t = torch.as_tensor(res.targets)
            expected = x * model[1].weight[t].reshape(x.shape)  # IG from zeros
        np.testing.assert_allclose(res.attributions, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_recorded_baselines_are_the_ones_ig_started_from():
    """Completeness against the model itself: for every image, found or fallback, the map
    sums to f_t(x) - f_t(recorded baseline); fallbacks are marked and recorded as zeros."""
    model = linear_model(3)
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    d2, _, _ = margins(model, x)
    radius = float(np.median(d2)) * 1.01  # reaches about half of the images
    res = big_attribute(model, x, norms=("L2",), eps={"L2": (radius,)}, n_steps=8)
    found = np.asarray(res.extra["boundary"]["found"])
    assert found.any() and not found.all()
    assert res.extra["boundary"]["fallback"] == np.flatnonzero(~found).tolist()
    assert res.extra["boundary"]["baseline_used"] == [
        "boundary" if f else "zeros" for f in found]
    np.testing.assert_array_equal(res.baselines[~found], 0.0)
    t = torch.as_tensor(res.targets)[:, None]
    with torch.no_grad():
        gap = model(x).gather(1, t) - model(torch.from_numpy(res.baselines)).gather(1, t)
    np.testing.assert_allclose(res.attributions.reshape(8, -1).sum(1), gap.squeeze(1).numpy(),
                               rtol=1e-4, atol=1e-5)
    nan = big_attribute(model, x, norms=("L2",), eps={"L2": (radius,)}, n_steps=8,
                        fallback="nan")
    assert np.isnan(nan.baselines[~found]).all() and not np.isnan(nan.baselines[found]).any()
    assert nan.extra["boundary"]["baseline_used"] == ["boundary" if f else "none" for f in found]


def test_two_norms_keep_the_closest_flip():
    model = linear_model(5)
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    res = find_boundary(model, x, norms=("L2", "Linf"), eps={"L2": GRID_L2, "Linf": GRID_LINF},
                        steps=20)
    only_l2 = find_boundary(model, x, norms=("L2",), eps={"L2": GRID_L2}, steps=20)
    for i in range(len(x)):
        if only_l2.found[i]:
            assert res.distance[i] <= only_l2.distance[i] + 1e-6
            diff = (torch.from_numpy(res.points[i]) - x[i]).norm()
            assert float(diff) == pytest.approx(res.distance[i], rel=1e-5)
