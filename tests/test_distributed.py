"""Dask capture gives the same arrays as a single-process capture, and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.data import ShapesDataset
from deepprofile.models import SmallResNet, save_checkpoint

distributed = pytest.importorskip("dask.distributed")


def test_distributed_capture_matches_single_process(tmp_path):
    from deepprofile.distributed import capture_distributed

    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)})
    data = ShapesDataset(n=70, seed=3)
    reds = {"layer1": "positions:3", "layer3": "mean"}
    ref = capture_to_store(model.eval(), data, ["layer1", "layer3"], tmp_path / "ref.zarr",
                           reductions=reds, batch_size=8, chunk_size=16, quiet=True)
    threads_before = torch.get_num_threads()
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        got = capture_distributed(ckpt, data.spec(), ["layer1", "layer3"], tmp_path / "d.zarr",
                                  reductions=reds, client=client, batch_size=8, chunk_size=16)
        assert got.is_complete and got.n_chunks == 5
        for name in ref.layers:
            np.testing.assert_array_equal(got.layer(name), ref.layer(name))
        np.testing.assert_array_equal(got.logits, ref.logits)
        # a second call on a finished store sends no work and keeps the arrays
        again = capture_distributed(ckpt, data.spec(), ["layer1", "layer3"],
                                    tmp_path / "d.zarr", reductions=reds, client=client,
                                    batch_size=8, chunk_size=16)
    np.testing.assert_array_equal(ActivationStore.open(again.path).labels, ref.labels)
    # in-process workers leave the caller's torch thread count alone
    assert torch.get_num_threads() == threads_before
