"""One BLAS thread for per-layer analyses: a layer computed in the command's process (BLAS
on every core) has the same bits as one computed on a Dask worker (one BLAS thread)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from deepprofile.topology.clouds import PointCloud
from deepprofile.topology.matching import SensitivitySweep
from deepprofile.topology.pipeline import _sweep_layer


def _cloud() -> PointCloud:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 128)).astype(np.float32) @ rng.normal(
        size=(128, 128)).astype(np.float32)
    n = len(points)
    return PointCloud(layer="x", kind="mean", points=points, rows=np.arange(n),
                      labels=np.zeros(n, int), sample_ids=np.arange(n))


def _bits(result) -> tuple:
    return result.distances, result.cka


@pytest.mark.skipif(not any(i.get("user_api") == "blas" and i.get("num_threads", 1) > 1
                            for i in threadpool_info()), reason="BLAS has one thread here")
def test_sweep_layer_has_the_bits_of_one_blas_thread():
    cloud, sweep = _cloud(), SensitivitySweep((0, 1, 2, 4, 8), homology_dims=(0,), seed=0)
    with threadpool_limits(1, user_api="blas"):
        one = _bits(sweep.fit(cloud).result_)
    with threadpool_limits(2, user_api="blas"):
        two = _bits(sweep.fit(cloud).result_)  # unguarded: the thread count shows
        guarded = _bits(_sweep_layer((cloud, None), sweep))
    assert guarded == one
    if two == one:
        pytest.skip("this BLAS gives the same bits on one and two threads: nothing to guard")
