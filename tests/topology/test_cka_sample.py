"""CKA under the fps sampler: one shared image sample for every layer, never a silent
intersection. Reference: Kornblith et al.'s linear CKA written out by hand on the stored
activations of the recorded images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture.runner import capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.errors import ShapeError
from deepprofile.models.small import SmallResNet
from deepprofile.topology.clouds import cloud_from_array, clouds_from_store
from deepprofile.topology.pipeline import TopologyAnalysis
from deepprofile.topology.similarity import aligned_points

LAYERS = ["layer1", "layer2", "layer3"]


def _kornblith(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallResNet(widths=(4, 8, 8)).eval()
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(80, 1, 12, 12)).astype(np.float32),
                        rng.integers(0, 3, 80), name="noise")
    path = tmp_path_factory.mktemp("cka") / "activations.zarr"
    return capture_to_store(model, data, LAYERS, path, reductions="mean", quiet=True)


def _by_hand(store, ids: np.ndarray) -> np.ndarray:
    row_of = {int(i): r for r, i in enumerate(np.asarray(store.indices))}
    rows = [row_of[int(i)] for i in ids]
    acts = {n: np.asarray(store.layer(n), dtype=np.float64)[rows] for n in LAYERS}
    return np.array([[_kornblith(acts[a], acts[b]) for b in LAYERS] for a in LAYERS])


def test_fps_cka_uses_one_shared_sample(store) -> None:
    kw = dict(cloud="image", n_points=30, sampler="fps", cka=("linear",),
              metrics=("sliced_wasserstein",), sensitivity_k=(), homology=(0,), quiet=True)
    fps = clouds_from_store(store, LAYERS, kind="image", n_points=30, sampler="fps")
    assert len(np.intersect1d(fps["layer1"].sample_ids, fps["layer3"].sample_ids)) < 30
    result = TopologyAnalysis(**kw).fit(store).result_
    info = result.params["cka_samples"]
    ids = np.asarray(info["sample_ids"])
    assert info["n_images"] == len(ids) == 30 and len(np.unique(ids)) == 30
    assert set(ids) <= set(np.asarray(store.indices).tolist())
    np.testing.assert_allclose(result.cka["linear"], _by_hand(store, ids), rtol=1e-9)
    comparison = TopologyAnalysis(**kw).compare(store, store)
    ids = np.asarray(comparison.params["cka_samples"]["sample_ids"])
    np.testing.assert_allclose(comparison.cka["linear"], _by_hand(store, ids), rtol=1e-9)


def test_random_sampler_keeps_its_own_sample(store) -> None:
    result = TopologyAnalysis(cloud="image", n_points=30, sampler="random", cka=("linear",),
                              metrics=("sliced_wasserstein",), sensitivity_k=(),
                              homology=(0,), quiet=True).fit(store).result_
    info = result.params["cka_samples"]
    assert info["how"].startswith("the clouds' own sample")
    ids = np.sort(np.asarray(store.indices)[np.sort(
        np.random.default_rng(0).choice(80, 30, replace=False))])
    np.testing.assert_array_equal(info["sample_ids"], ids)
    np.testing.assert_allclose(result.cka["linear"], _by_hand(store, ids), rtol=1e-9)


def test_clouds_of_different_images_are_refused() -> None:
    rng = np.random.default_rng(1)
    a = cloud_from_array(rng.normal(size=(40, 3)), "a")
    b = cloud_from_array(rng.normal(size=(40, 3)), "b")
    part = type(b)(**{**b.__dict__, "points": b.points[5:], "sample_ids": b.sample_ids[5:]})
    with pytest.raises(ShapeError, match="share only 35 images"):
        aligned_points(a, part)
