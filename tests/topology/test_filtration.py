"""One filtration for base and perturbed diagrams in the sensitivity sweep, and the run's seed
in the cutoff quantile. References: giotto-ph called directly, a numpy PCA, scipy's pdist."""

from __future__ import annotations

import numpy as np
import pytest
from gph import ripser_parallel
from scipy.spatial.distance import pdist

from deepprofile.topology.clouds import cloud_from_array
from deepprofile.topology.distances import DiagramDistance
from deepprofile.topology.matching import SensitivitySweep
from deepprofile.topology.persistence import VietorisRips


def _pca_removed(points: np.ndarray, k: int) -> np.ndarray:
    centred = points - points.mean(0)
    vt = np.linalg.eigh(centred.T @ centred)[1][:, ::-1].T  # principal axes, largest first
    return points - (centred @ vt[:k].T) @ vt[:k]


@pytest.mark.parametrize("given", [True, False])
def test_sweep_applies_the_base_cutoff_to_the_reduced_clouds(given: bool) -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(70, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.3])
    cloud = cloud_from_array(points, "toy")
    base = VietorisRips((0, 1), cutoff_quantile=0.3, seed=5).compute(cloud)
    t = base.thresh
    assert np.isfinite(t)
    sweep = SensitivitySweep((0, 1, 2), homology_dims=(0, 1), cutoff_quantile=0.3, seed=5)
    result = sweep.fit(cloud, base if given else None).result_
    assert result.params["thresh"] == pytest.approx(t)
    dist = DiagramDistance("sliced_wasserstein")
    ref_base = ripser_parallel(points, maxdim=1, thresh=t)["dgms"]
    for i, k in enumerate((0, 1, 2)):
        reduced = ripser_parallel(_pca_removed(points, k), maxdim=1, thresh=t)["dgms"]
        for d in (0, 1):
            expected = dist(ref_base[d], reduced[d], t, t)
            assert result.distances[d][i] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_cutoff_quantile_uses_the_given_seed() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3100, 3))  # more than quantile_threshold's 3000-point sample
    thresholds = []
    for seed in (1, 2):
        dg = VietorisRips((0,), cutoff_quantile=0.02, seed=seed).compute(points)
        sample = points[np.random.default_rng(seed).choice(3100, 3000, replace=False)]
        assert dg.thresh == pytest.approx(np.quantile(pdist(sample), 0.02), rel=1e-12)
        assert dg.params["seed"] == seed
        thresholds.append(dg.thresh)
    assert thresholds[0] != thresholds[1]


def test_topology_analysis_threads_its_seed_to_the_cutoff() -> None:
    from deepprofile.topology.pipeline import TopologyAnalysis

    ana = TopologyAnalysis(seed=9, cutoff_quantile=0.5)
    assert ana._rips().seed == 9
