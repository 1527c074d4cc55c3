"""Store format 2 (one commit record per chunk) and reading format 1 stores.

Format 1 wrote a digest file per array and chunk plus a separate done flag; format 2
writes the digests and the flag as one record. A format 1 store is rebuilt here from a
format 2 capture exactly as format 1 laid it out (``digests/<key>``, ``chunks_done``),
so the test does not depend on an old deepprofile being installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.capture.store import FORMAT_VERSION
from deepprofile.errors import CorruptStoreError, StoreMismatchError

LAYERS = ["conv1", "conv2", "fc"]
KW = dict(reductions="mean", batch_size=8, chunk_size=16, quiet=True, seed=1)


def _as_format_1(path: Path, done: int | None = None) -> None:
    """Rewrite the store at ``path`` in format 1's layout (first ``done`` chunks committed)."""
    store = ActivationStore.open(path)
    rows = zarr.open_array(str(path / "commits"), mode="r")[...]
    keys = store.array_keys()
    group = zarr.open_group(str(path), mode="r+")
    n_chunks = len(rows)
    flags = rows[:, -1].astype(np.uint8)
    if done is not None:
        flags[done:] = 0
    group.create_array("chunks_done", shape=(n_chunks,), chunks=(1,), dtype="uint8",
                       fill_value=0)[...] = flags
    for j, key in enumerate(keys):
        group.create_array(f"digests/{key}", shape=(n_chunks,), chunks=(1,), dtype="uint32",
                           fill_value=0)[...] = np.where(flags == 1, rows[:, j], 0)
    shutil.rmtree(path / "commits")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["deepprofile"]["format"] = 1
    if done is not None:
        meta["attributes"]["deepprofile"]["metadata"].pop("fingerprint", None)
    (path / "zarr.json").write_text(json.dumps(meta))


def _capture(net, dataset, path, **kw):
    return capture_to_store(net, dataset, LAYERS, path, **(KW | kw))


def test_one_commit_file_per_chunk_and_no_format_1_files(tiny_net, tiny_dataset, tmp_path):
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    assert store.format == FORMAT_VERSION == 2
    files = sorted(p.relative_to(store.path / "commits").as_posix()
                   for p in (store.path / "commits").rglob("*") if p.is_file())
    assert files == sorted([f"c/{i}/0" for i in range(store.n_chunks)] + ["zarr.json"])
    assert not (store.path / "digests").exists() and not (store.path / "chunks_done").exists()


def test_finalize_from_memory_equals_reading_back(tiny_net, tiny_dataset, tmp_path):
    """A one-process capture finalises from what it kept while writing; an independent
    read of the finished store gives the same fingerprint and accuracy."""
    store = _capture(tiny_net, tiny_dataset, tmp_path / "s.zarr")
    again = ActivationStore.open(store.path)
    assert store.metadata["fingerprint"] == again._compute_fingerprint()
    assert store.metadata["accuracy"] == float((again.predictions == again.labels).mean())
    assert 0 < store.metadata["accuracy"] < 1  # the comparison means something here
    # and the same when finalize has to read everything back
    fresh = ActivationStore.open(store.path)
    fresh.finalize()
    assert fresh.metadata["fingerprint"] == store.metadata["fingerprint"]
    assert fresh.metadata["accuracy"] == store.metadata["accuracy"]


def test_format_1_store_reads_verifies_and_keeps_its_fingerprint(tiny_net, tiny_dataset,
                                                                 tmp_path):
    ref = _capture(tiny_net, tiny_dataset, tmp_path / "ref.zarr")
    path = tmp_path / "old.zarr"
    shutil.copytree(ref.path, path)
    _as_format_1(path)
    old = ActivationStore.open(path)
    assert old.format == 1 and old.is_complete
    old.verify_all()
    assert old._compute_fingerprint() == ref.metadata["fingerprint"]
    for name in LAYERS:
        np.testing.assert_array_equal(old.layer(name), ref.layer(name))
    np.testing.assert_array_equal(old.labels, ref.labels)
    # a finished format 1 store is reused by the same capture, not rewritten
    again = _capture(tiny_net, tiny_dataset, path)
    assert again.format == 1 and again.fingerprint() == ref.metadata["fingerprint"]
    # its digests still guard the data
    digests = zarr.open_array(str(path / "digests" / "labels"), mode="r+")
    digests[1] = digests[1] ^ 1
    with pytest.raises(CorruptStoreError, match="Chunk 1 of 'labels'"):
        _ = ActivationStore.open(path).labels


def test_unfinished_format_1_store_is_not_resumed(tiny_net, tiny_dataset, tmp_path):
    ref = _capture(tiny_net, tiny_dataset, tmp_path / "ref.zarr")
    path = tmp_path / "old.zarr"
    shutil.copytree(ref.path, path)
    _as_format_1(path, done=1)
    with pytest.raises(StoreMismatchError, match="older deepprofile.*--overwrite"):
        _capture(tiny_net, tiny_dataset, path)
    fresh = _capture(tiny_net, tiny_dataset, path, overwrite=True)
    assert fresh.format == 2 and fresh.fingerprint() == ref.metadata["fingerprint"]


def test_format_1_done_flag_other_than_0_1_is_damage(tiny_net, tiny_dataset, tmp_path):
    path = tmp_path / "old.zarr"
    shutil.copytree(_capture(tiny_net, tiny_dataset, tmp_path / "ref.zarr").path, path)
    _as_format_1(path)
    zarr.open_array(str(path / "chunks_done"), mode="r+")[1] = 2
    with pytest.raises(CorruptStoreError, match="done flag is neither 0 nor 1"):
        ActivationStore.open(path).is_complete  # noqa: B018


def test_unfinished_format_1_store_says_overwrite_not_resume(tiny_net, tiny_dataset, tmp_path):
    path = tmp_path / "old.zarr"
    shutil.copytree(_capture(tiny_net, tiny_dataset, tmp_path / "ref.zarr").path, path)
    _as_format_1(path, done=1)
    with pytest.raises(CorruptStoreError, match="older deepprofile.*--overwrite") as info:
        _ = ActivationStore.open(path).labels
    assert "Run the same capture command again" not in str(info.value)
