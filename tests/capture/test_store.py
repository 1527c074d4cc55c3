"""ActivationStore: round trip, resume after a crash, mismatch, corruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.data import ArrayDataset
from deepprofile.errors import (
    CorruptStoreError,
    EmptyDatasetError,
    MissingFileError,
    StoreMismatchError,
    UnknownLayerError,
)

REDS = {"conv1": "positions:3", "conv2": "mean", "fc": "mean"}


def _capture(net, dataset, path, **kw):
    kw.setdefault("reductions", REDS)
    return capture_to_store(net, dataset, ["conv1", "conv2", "fc"], path, batch_size=8,
                            chunk_size=16, quiet=True, seed=5, **kw)


def test_round_trip_matches_direct_forward(tiny_net, tiny_dataset, tmp_path):
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    again = ActivationStore.open(tmp_path / "s.zarr")
    assert again.layers == ["conv1", "conv2", "fc"]
    assert again.n_samples == 50 and again.is_complete
    assert again.layer("conv1").shape == (50, 3, 2)
    assert again.output_shape("conv2") == (3, 4, 4)
    with torch.no_grad():
        logits = tiny_net(tiny_dataset.images)
        conv2 = tiny_net.conv2(tiny_net.act(tiny_net.conv1(tiny_dataset.images)))
    np.testing.assert_allclose(again.logits, logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.layer("conv2"), conv2.mean(dim=(2, 3)).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again.labels, tiny_dataset.targets.numpy())
    np.testing.assert_array_equal(again.predictions, logits.argmax(1).numpy())
    np.testing.assert_array_equal(again.indices, np.arange(50))
    assert again.metadata["dataset"]["name"] == "tiny"
    assert again.metadata["weights_hash"] == store.metadata["weights_hash"]
    assert "torch" in again.metadata["versions"]
    assert again.reduction("conv1") == "positions:3"


class CrashingDataset(ArrayDataset):
    """Raises when asked for sample ``crash_at``, like a run killed mid-capture."""

    crash_at: int | None = None

    def __getitem__(self, index):
        if self.crash_at is not None and index == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        return super().__getitem__(index)


def test_resume_after_crash_gives_identical_arrays(tiny_net, tiny_dataset, tmp_path):
    full = _capture(tiny_net, tiny_dataset, tmp_path / "full.zarr")
    crashing = CrashingDataset(tiny_dataset.images, tiny_dataset.targets, name="tiny")
    crashing.crash_at = 37
    with pytest.raises(KeyboardInterrupt):
        _capture(tiny_net, crashing, tmp_path / "part.zarr")
    partial = ActivationStore.open(tmp_path / "part.zarr")
    assert partial.completed == 32  # two whole chunks of 16 were committed
    with pytest.raises(CorruptStoreError, match="incomplete: 32 of 50"):
        partial.layer("conv2")
    crashing.crash_at = None
    resumed = _capture(tiny_net, crashing, tmp_path / "part.zarr")
    assert resumed.is_complete
    for name in full.layers:
        np.testing.assert_array_equal(resumed.layer(name), full.layer(name))
    for key in ("labels", "predictions", "logits", "indices"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(full, key))


def test_mismatched_configuration_is_refused_unless_overwrite(tiny_net, tiny_dataset, tmp_path):
    _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    with pytest.raises(StoreMismatchError, match="reductions"):
        _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr", reductions="max")
    torch.nn.init.zeros_(tiny_net.fc.bias)
    with pytest.raises(StoreMismatchError, match="weights_hash"):
        _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr", reductions="max",
                     overwrite=True)
    assert store.reduction("conv2") == "max" and store.is_complete


def test_missing_chunk_is_detected(tiny_net, tiny_dataset, tmp_path):
    _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    chunk = tmp_path / "s.zarr" / "layers" / "conv2" / "c" / "1" / "0"
    assert chunk.exists()
    chunk.unlink()
    with pytest.raises(CorruptStoreError, match="Chunk 1 of 'layers/conv2'"):
        ActivationStore.open(tmp_path / "s.zarr").layer("conv2")


def test_labels_chunk_replaced_is_detected(tiny_net, tiny_dataset, tmp_path):
    _capture(tiny_net, tiny_dataset, tmp_path / "a.zarr")
    other = ArrayDataset(tiny_dataset.images, (tiny_dataset.targets + 1) % 4, name="tiny")
    _capture(tiny_net, other, tmp_path / "b.zarr", overwrite=True)
    src = tmp_path / "b.zarr" / "labels" / "c" / "0"
    shutil.copy(src, tmp_path / "a.zarr" / "labels" / "c" / "0")
    with pytest.raises(CorruptStoreError, match="checksum"):
        _ = ActivationStore.open(tmp_path / "a.zarr").labels


def test_damaged_bytes_and_metadata_are_clear_errors(tiny_net, tiny_dataset, tmp_path):
    _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    chunk = tmp_path / "s.zarr" / "layers" / "fc" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError):
        ActivationStore.open(tmp_path / "s.zarr").layer("fc")
    (tmp_path / "s.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match="Cannot read"):
        ActivationStore.open(tmp_path / "s.zarr")


def test_foreign_or_missing_store(tmp_path):
    with pytest.raises(MissingFileError, match="deepprofile capture"):
        ActivationStore.open(tmp_path / "nope.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(CorruptStoreError, match="not a deepprofile"):
        ActivationStore.open(tmp_path / "other.zarr")
    (tmp_path / "bad.zarr").mkdir()
    with pytest.raises(CorruptStoreError):
        ActivationStore.open(tmp_path / "bad.zarr")


def test_unknown_stored_layer_and_empty_dataset(tiny_net, tiny_dataset, tmp_path):
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    with pytest.raises(UnknownLayerError, match="Did you mean: conv2"):
        store.layer("conv3")
    with pytest.raises(EmptyDatasetError, match="no samples"):
        _capture(tiny_net, tiny_dataset, tmp_path / "e.zarr", indices=[])


def test_metadata_is_plain_json(tiny_net, tiny_dataset, tmp_path):
    _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    meta = json.loads(Path(tmp_path / "s.zarr" / "zarr.json").read_text())
    dp = meta["attributes"]["deepprofile"]
    assert dp["n_samples"] == 50 and dp["config"]["seed"] == 5


def test_memory_stays_bounded_by_chunk(tiny_net, tmp_path):
    """Only one chunk is buffered: the store is written chunk by chunk as capture goes."""
    images = torch.randn(64, 1, 8, 8)
    ds = CrashingDataset(images, torch.zeros(64, dtype=torch.long), name="t")
    ds.crash_at = 50
    with pytest.raises(KeyboardInterrupt):
        capture_to_store(tiny_net, ds, ["conv1"], tmp_path / "s.zarr", reductions="flatten",
                         batch_size=8, chunk_size=16, quiet=True)
    assert ActivationStore.open(tmp_path / "s.zarr").completed == 48


def test_iter_layer_streams_verified_blocks(tiny_net, tiny_dataset, tmp_path):
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    blocks = list(store.iter_layer("conv2", batch_size=32))
    assert [start for start, _ in blocks] == [0, 32]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), store.layer("conv2"))
    (tmp_path / "s.zarr" / "layers" / "conv2" / "c" / "2" / "0").unlink()
    with pytest.raises(CorruptStoreError, match="Chunk 2"):
        list(ActivationStore.open(tmp_path / "s.zarr").iter_layer("conv2", batch_size=32))
