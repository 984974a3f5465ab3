"""One BLAS thread while the search or an early stopper works, whoever else does at once.

Their matrices are small (a few hundred rows at most), and a multi-threaded OpenBLAS spinning
on a loaded machine made suggestions 20x slower in measurements. threadpoolctl's limit is
process-wide and restores, on exit, what it saw on entry: two overlapping in two threads (a
peer's suggestion beside its freeze-thaw decision, Studies in a thread pool) exited in the
wrong order, and the whole process's BLAS stayed at one thread for good. So the limit is
shared: the first holder sets it, the last one out restores it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_holders = 0
_limiter: Any = None  # the first holder's limit, restored by the last one out


@functools.cache
def _controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # (a dependency; a broken install still searches, only slower)
        return None
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    global _holders, _limiter
    controller = _controller()
    if controller is None:
        yield
        return
    with _lock:
        if _holders == 0:
            _limiter = controller.limit(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _limiter.restore_original_limits()
                _limiter = None
