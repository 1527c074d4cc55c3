"""TRAK featurisation as Dask tasks (issue 17): the features and scores of one process,
resumable after the whole job is killed, retried when a worker dies."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.data_attribution import featurize
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def address():
    """Two single-thread workers in this process, reached by their tcp:// address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _ensemble(setup, path, **kw):
    return TrakEnsemble(setup["model"], checkpoint_infos(setup["checkpoints"]), setup["train"],
                        FeatureStore(path / "data_attribution.zarr"), proj_dim=20,
                        batch_size=16, chunk_size=kw.pop("chunk_size", 50), quiet=True, **kw)


def _arrays(ens: TrakEnsemble) -> dict[str, bytes]:
    out = {}
    for key in ens.store.keys():
        group = ens.store.get(key)._group
        for name in ("grads", "out_to_loss", "chunks_done"):
            out[f"{key}/{name}"] = np.ascontiguousarray(group[name][...]).tobytes()
    return out


def test_two_workers_equal_one_process_bitwise(tiny_setup, tmp_path, address):
    from deepprofile.data_attribution.distributed import featurize_distributed

    one = _ensemble(tiny_setup, tmp_path / "one")
    expected = one.scores(MarginOutput(), tiny_setup["test"])
    dask = _ensemble(tiny_setup, tmp_path / "dask")
    with distributed.Client(address) as client:
        done = featurize_distributed(dask, client)
        assert done == [(m, c) for m in (0, 1) for c in (0, 1, 2)]  # 120 rows, chunks of 50
        assert featurize_distributed(dask, client) == []  # nothing pending: nothing sent
    assert _arrays(dask) == _arrays(one)

    def never(*a, **k):
        raise AssertionError("features were recomputed in the scoring process")

    original = featurize.featurize_chunks
    featurize.featurize_chunks = never
    try:
        got = dask.scores(MarginOutput(), tiny_setup["test"])
    finally:
        featurize.featurize_chunks = original
    np.testing.assert_array_equal(got, expected)
