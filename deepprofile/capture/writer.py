"""Write finished chunks to the store on a background thread, overlapping the forward pass.

Zarr compression, the chunk checksums and the file writes take a fixed share of every
chunk; done inline they sit on the critical path between two forward passes. A
:class:`ChunkWriter` takes whole chunks through a bounded queue (``max_pending``
chunks wait at most, so memory stays bounded: the producer blocks when the writer
falls behind) and writes them in order with
:meth:`~deepprofile.capture.store.ActivationStore.write_chunk`, which flags a chunk
done only after all its arrays and digests are written. A crash therefore leaves the
same resumable state as inline writes: chunks queued but not yet written are simply
not flagged. An error in the writer is re-raised in the main thread (at the next
:meth:`submit` or on leaving the ``with`` block); the writer then discards what is
still queued, so the producer never blocks on a dead writer.

``open_store`` (instead of a store) makes the store on the writer's first chunk, so a
new store's creation also overlaps the forward pass.

With ``background=False`` the same object writes each chunk inline in :meth:`submit`:
on a single core a writer thread could only take turns with the forward pass
(:func:`~deepprofile.capture.runner.background_writes_pay` decides).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping

import numpy as np

from deepprofile.capture.store import ActivationStore
from deepprofile.testhooks import kill_point

_STOP = object()


class ChunkWriter:
    """Context manager: ``with ChunkWriter(store) as w: w.submit(start, arrays)``.

    ``on_written(start)`` (optional) runs on the writer thread (inline: in the caller)
    after each chunk is committed. Leaving the block waits for every queued chunk to be
    written.
    """

    def __init__(self, store: ActivationStore | None, *, max_pending: int = 2,
                 on_written: Callable[[int], None] | None = None,
                 background: bool = True,
                 open_store: Callable[[], ActivationStore] | None = None) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if (store is None) == (open_store is None):
            raise ValueError("Give ChunkWriter either a store or open_store, not both.")
        self.store = store
        self._open_store = open_store
        self.background = background
        self.on_written = on_written
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._entered = False
        self.written = 0

    def __enter__(self) -> ChunkWriter:
        if not self.background:
            self._entered = True
            return self
        self._thread = threading.Thread(target=self._run, name="deepprofile-chunk-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # failed: drain, so that submit() never blocks forever
            try:
                self._write(*item)
            except BaseException as exc:  # re-raised in the main thread
                self._error = exc

    def _write(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        if self.store is None:  # created on first use: off the main thread when in background
            assert self._open_store is not None
            self.store = self._open_store()
        self.store.write_chunk(start, arrays)
        self.written += 1
        kill_point("chunk-committed")
        if self.on_written is not None:
            self.on_written(start)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Queue one whole chunk (blocks while ``max_pending`` chunks wait); inline, write it."""
        self._raise_if_failed()
        if not self.background:
            if not self._entered:
                raise RuntimeError(
                    "Use ChunkWriter inside `with ChunkWriter(store) as writer:`.")
            self._write(start, arrays)
            return
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("Use ChunkWriter inside `with ChunkWriter(store) as writer:`.")
        self._queue.put((start, dict(arrays)))

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._entered = False
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if exc is None:
            self._raise_if_failed()
