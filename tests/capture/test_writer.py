"""The background chunk writer: errors reach the main thread, done flags stay truthful."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.capture.writer import ChunkWriter


class _FailingStore:
    """Stands in for a store whose disk fails on the second chunk."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write_chunk(self, start, arrays):
        if start >= 16:
            raise OSError("disk full")
        self.written.append(start)


def test_writer_error_is_raised_in_the_main_thread():
    store = _FailingStore()
    with pytest.raises(OSError, match="disk full"):
        with ChunkWriter(store, max_pending=1) as writer:  # type: ignore[arg-type]
            for start in range(0, 16 * 20, 16):  # never blocks on the dead writer
                writer.submit(start, {"x": np.zeros(1)})
    assert store.written == [0]


def test_writer_writes_in_order_off_the_main_thread():
    seen: list[tuple[int, str]] = []

    class _Store:
        def write_chunk(self, start, arrays):
            seen.append((start, threading.current_thread().name))

    with ChunkWriter(_Store(), max_pending=2) as writer:  # type: ignore[arg-type]
        for start in (0, 16, 32, 48):
            writer.submit(start, {"x": np.zeros(1)})
    assert [s for s, _ in seen] == [0, 16, 32, 48]
    assert {name for _, name in seen} == {"deepprofile-chunk-writer"}


def test_failed_write_leaves_the_chunk_pending_and_resume_is_identical(
        tiny_net, tiny_dataset, tmp_path, monkeypatch):
    kw = dict(reductions="mean", batch_size=8, chunk_size=16, quiet=True, seed=5)
    ref = capture_to_store(tiny_net, tiny_dataset, ["conv1", "conv2"], tmp_path / "ref.zarr",
                           **kw)
    original = ActivationStore.write_chunk

    def flaky(self, start, arrays):
        if start == 16:
            # half of the chunk's arrays are written, then the disk fails
            first = dict(list(arrays.items())[:1])
            self._group[next(iter(first))][start : start + 16] = next(iter(first.values()))
            raise OSError("disk full")
        return original(self, start, arrays)

    monkeypatch.setattr(ActivationStore, "write_chunk", flaky)
    path = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="disk full"):
        capture_to_store(tiny_net, tiny_dataset, ["conv1", "conv2"], path, **kw)
    monkeypatch.setattr(ActivationStore, "write_chunk", original)
    partial = ActivationStore.open(path, verify=False)
    done = partial.done_chunks()
    assert done[0] and not done[1]  # the failed chunk is not flagged done
    store = capture_to_store(tiny_net, tiny_dataset, ["conv1", "conv2"], path, **kw)
    for name in ("conv1", "conv2"):
        np.testing.assert_array_equal(store.layer(name), ref.layer(name))
    np.testing.assert_array_equal(store.indices, ref.indices)
