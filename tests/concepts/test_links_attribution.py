"""Concept-conditional attribution: the probe head, its hooks, and mass on a marker patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from deepprofile.capture.hooks import hook_count
from deepprofile.concepts.links_attribution import (
    ProbeLogit,
    concept_attribution,
    region_share,
)
from deepprofile.concepts.sets import shapes_regions
from deepprofile.errors import ShapeError, UnknownLayerError

SIZE = 12
PATCH = (slice(0, 3), slice(0, 3))


class Blind(nn.Module):
    """Zeroes the marker patch: a network behind it cannot see the marker."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(x)
        keep[(slice(None), slice(None), *PATCH)] = 0
        return x * keep


class MarkerNet(nn.Module):
    def __init__(self, blind: bool = False) -> None:
        super().__init__()
        self.blind = Blind() if blind else nn.Identity()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.act1 = nn.Tanh()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = nn.Tanh()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(self.blind(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def _marker_data(n: int = 160, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.15, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    marker = rng.random(n) < 0.5
    x[marker, 0, 0:3, 0:3] = 1.5
    return torch.from_numpy(x), marker


def _train(model: nn.Module, x: torch.Tensor, y: np.ndarray, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    target = torch.as_tensor(y.astype(np.int64))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), target).backward()
        opt.step()
    return model.eval()


def _probe(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    with torch.no_grad():
        feats = model.act2(model.conv2(model.act1(model.conv1(model.blind(x))))).mean(dim=(2, 3))
    clf = LogisticRegression(max_iter=2000).fit(feats.numpy(), y)
    return clf.coef_[0], float(clf.intercept_[0]), float(clf.score(feats.numpy(), y))


def test_probe_logit_matches_direct_computation():
    torch.manual_seed(0)
    net = MarkerNet()
    x, _ = _marker_data(6)
    w, b = np.arange(8, dtype=np.float32) - 3.5, 0.25
    head = ProbeLogit(net, "act2", w, b, "mean")
    with torch.no_grad():
        feats = net.act2(net.conv2(net.act1(net.conv1(x)))).mean(dim=(2, 3))
        expected = feats @ torch.from_numpy(w) + b
        got = head(x)
    assert got.shape == (6, 1)
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert hook_count(net) == 0


def test_no_hook_survives_errors():
    torch.manual_seed(0)
    net = MarkerNet()
    x, _ = _marker_data(4)
    with pytest.raises(ShapeError, match="features"):
        ProbeLogit(net, "act2", np.ones(5), 0.0)(x)
    assert hook_count(net) == 0

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net.blind = Boom()  # raises before the hooked layer is reached
    with pytest.raises(RuntimeError, match="boom"):
        ProbeLogit(net, "act2", np.ones(8), 0.0)(x)
    assert hook_count(net) == 0
    with pytest.raises(UnknownLayerError):
        ProbeLogit(net, "act3", np.ones(8), 0.0)


def test_integrated_gradients_of_the_probe_are_complete():
    torch.manual_seed(0)
    net = MarkerNet()
    x, _ = _marker_data(3)
    w = np.linspace(-1, 1, 8)
    maps = concept_attribution(net, "act2", w, 0.1, x, n_steps=64)
    head = ProbeLogit(net, "act2", w, 0.1)
    with torch.no_grad():
        gap = (head(x) - head(torch.zeros_like(x)))[:, 0].numpy()
    np.testing.assert_allclose(maps.attributions.reshape(3, -1).sum(axis=1), gap, atol=2e-3)
    assert hook_count(net) == 0


def test_attribution_mass_lands_on_the_marker_only_when_the_model_sees_it():
    x, marker = _marker_data()
    seeing = _train(MarkerNet(), x, marker)
    blind = _train(MarkerNet(blind=True), x, marker)
    w_s, b_s, acc_s = _probe(seeing, x, marker)
    w_b, b_b, acc_b = _probe(blind, x, marker)
    assert acc_s > 0.95 and acc_b < 0.75  # the blind model cannot decode the marker
    marked = x[marker][:12]
    regions = np.zeros((12, SIZE, SIZE), bool)
    regions[(slice(None), *PATCH)] = True
    share_s = region_share(concept_attribution(seeing, "act2", w_s, b_s, marked,
                                               n_steps=32).attributions, regions)
    share_b = region_share(concept_attribution(blind, "act2", w_b, b_b, marked,
                                               n_steps=32).attributions, regions)
    area = 9 / SIZE**2
    assert share_s["mean_area_share"] == pytest.approx(area)
    assert share_s["mean_mass_share"] > 3 * area  # concentrated on the patch
    assert share_b["mean_mass_share"] == 0.0  # no gradient reaches the hidden patch


def test_region_share_by_hand():
    attr = np.zeros((2, 3, 4, 4))
    attr[0, 0, 0, 0] = 3.0
    attr[0, 1, 3, 3] = -1.0  # absolute values count
    regions = np.zeros((2, 4, 4), bool)
    regions[:, 0, :2] = True
    out = region_share(attr, regions)
    assert out["mass_share"][0] == pytest.approx(0.75)
    assert np.isnan(out["mass_share"][1])  # no mass: left out
    assert out["n_images"] == 1 and out["mean_area_share"] == pytest.approx(2 / 16)
    assert out["enrichment"] == pytest.approx(0.75 / (2 / 16))
    with pytest.raises(ShapeError):
        region_share(attr, regions[:, :3])


def test_shapes_regions_follow_the_ground_truth():
    from deepprofile.data.shapes import render_shape

    params = {"seed": 3, "spurious_class": 0, "marker_rate": 1.0, "marker_base_rate": 1.0}
    idx = [0, 2, 4, 5]
    regions = shapes_regions(idx, "colour:red", **params)
    marker = shapes_regions(idx, "marker", **params)
    assert marker.shape == (4, 32, 32) and (marker.sum(axis=(1, 2)) == 9).all()
    for row, i in enumerate(idx):
        image, _ = render_shape(3, i, 0, 1.0, 1.0)
        # independent truth from the pixels: the background is dim noise (mean 0.08, sd
        # 0.03), every shape pixel has a channel >= 0.3, the marker is white
        bright = image.max(axis=0) > 0.25
        np.testing.assert_array_equal(regions[row] | marker[row], bright)
        assert (image[:, marker[row]] == 1.0).all()
