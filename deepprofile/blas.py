"""One BLAS thread for a block of numerical code, so its bits do not depend on where it ran.

Per-layer analyses run either in the command's process (BLAS on every core) or as Dask
tasks in worker processes (BLAS on one thread). Multi-threaded BLAS/LAPACK splits sums
differently and changes the last bits of eigenvalues, SVDs and matrix products, so the
per-layer functions run under :func:`one_blas_thread` in both places: one process and a
cluster then write the same JSON, bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_controller: list[Any] = []  # threadpoolctl's view of the loaded BLAS libraries, made once


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block on one BLAS/LAPACK thread, so its floating-point results do not depend
    on the thread count: a multi-threaded ``syevd`` or ``gemm`` splits the work differently
    and changes the last bits (31 of ResNet-50's 54 layers, measured).

    Applied in the main thread only. Dask worker processes already run BLAS on one thread
    (Dask's ``distributed.nanny.pre-spawn-environ`` sets ``OPENBLAS_NUM_THREADS=1``), and
    the limit is process-wide: threads changing it concurrently (tasks of an in-process
    cluster) would leave the caller's BLAS on one thread (threadpoolctl restores in the
    wrong order), so there the block runs on the process's setting.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _controller:
        from threadpoolctl import ThreadpoolController

        _controller.append(ThreadpoolController())
    with _controller[0].limit(limits=1, user_api="blas"):
        yield
