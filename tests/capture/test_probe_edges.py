"""Hostile-user edges of capture (issue 17 probe): unverified reads of a store with a
missing chunk, and the errors of the meta-device shape pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.capture.hooks import hook_count
from deepprofile.capture.runner import prepare_store
from deepprofile.errors import CorruptStoreError, ShapeError

LAYERS = ["conv1", "conv2", "fc"]
KW = dict(reductions="mean", batch_size=8, chunk_size=16, quiet=True, seed=1)


@pytest.fixture
def finished(tiny_net, tiny_dataset, tmp_path):
    return capture_to_store(tiny_net, tiny_dataset, LAYERS, tmp_path / "s.zarr", **KW)


def test_unverified_reads_refuse_a_missing_layer_chunk(finished):
    """verify=False (mapper, spectral, concepts) skips digests for speed; a deleted chunk
    reads as NaN fill values and must still be named as damage, not passed on."""
    (finished.path / "layers" / "conv2" / "c" / "1" / "0").unlink()
    store = ActivationStore.open(finished.path, verify=False)
    with pytest.raises(CorruptStoreError, match="Chunk 1 of 'layers/conv2'"):
        store.layer("conv2")
    with pytest.raises(CorruptStoreError, match="Chunk 1 of 'layers/conv2'"):
        list(store.iter_layer("conv2"))
    # the intact layers still read without digest checks
    np.testing.assert_array_equal(store.layer("fc"), finished.layer("fc"))


def test_unverified_read_keeps_nan_a_capture_recorded(finished):
    """NaN that the digests cover (a capture with check_finite=False) is data, not damage."""
    arr = zarr.open_array(str(finished.path / "layers" / "fc"), mode="r+")
    commits = zarr.open_array(str(finished.path / "commits"), mode="r+")
    block = arr[0:16]
    block[3, 1] = np.nan
    arr[0:16] = block
    from deepprofile.capture.store import _digest

    commits[0, finished.array_keys().index("layers/fc")] = _digest(block)
    got = ActivationStore.open(finished.path, verify=False).layer("fc")
    assert np.isnan(got[3, 1]) and np.isfinite(np.delete(got.ravel(), 3 * 4 + 1)).all()


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.extra = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("how", ["prepare", "capture"])
def test_uncalled_layer_is_a_one_line_error(tiny_dataset, tmp_path, how):
    model = _Unused().eval()
    with pytest.raises(ShapeError, match=r"\['extra'\] did not run"):
        if how == "prepare":
            prepare_store(model, tiny_dataset, ["extra", "fc"], tmp_path / "s.zarr", batch_size=8)
        else:
            capture_to_store(model, tiny_dataset, ["extra", "fc"], tmp_path / "s.zarr",
                             batch_size=8, quiet=True)
    assert hook_count(model) == 0 and not (tmp_path / "s.zarr").exists()


def test_meta_shape_pass_names_the_layer_of_an_impossible_reduction(tiny_net, tiny_dataset,
                                                                     tmp_path):
    with pytest.raises(ShapeError, match="layer 'fc' has only 1"):
        prepare_store(tiny_net, tiny_dataset, ["fc"], tmp_path / "s.zarr",
                      reductions="positions:5", batch_size=8)
    assert hook_count(tiny_net) == 0


@pytest.mark.parametrize("how", ["prepare", "capture"])
def test_model_on_meta_device_is_refused_clearly(tiny_net, tiny_dataset, tmp_path, how):
    model = tiny_net.to("meta")
    with pytest.raises(ShapeError, match="meta device.*'conv1.weight'"):
        if how == "prepare":
            prepare_store(model, tiny_dataset, ["fc"], tmp_path / "s.zarr", batch_size=8)
        else:
            capture_to_store(model, tiny_dataset, ["fc"], tmp_path / "s.zarr", batch_size=8,
                             quiet=True)
