"""One BLAS thread while the search works, restored whatever order overlapping users leave in."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from metaopt import _blas
from metaopt._blas import one_blas_thread


class _Controller:
    """threadpoolctl's ThreadpoolController as far as one_blas_thread uses it."""

    def __init__(self) -> None:
        self.threads = 4

    def limit(self, *, limits: int, user_api: str) -> Any:
        controller, saved = self, self.threads
        controller.threads = limits

        class Limiter:
            def restore_original_limits(self) -> None:
                controller.threads = saved

        return Limiter()


def test_overlapping_holders_leaving_in_either_order_restore_the_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # threadpoolctl's limit restores what it saw on entry: the second of two overlapping
    # users saw 1 and, leaving last, left the whole process on one BLAS thread for good.
    controller = _Controller()
    monkeypatch.setattr(_blas, "_controller", lambda: controller)
    for first_out in (0, 1):
        entered = [threading.Event(), threading.Event()]
        leave = [threading.Event(), threading.Event()]
        seen: list[int] = []

        def hold(i: int, entered: Any = entered, leave: Any = leave, seen: Any = seen) -> None:
            with one_blas_thread():
                seen.append(controller.threads)
                entered[i].set()
                leave[i].wait(5)

        threads = [threading.Thread(target=hold, args=(i,)) for i in (0, 1)]
        threads[0].start()
        entered[0].wait(5)
        threads[1].start()
        entered[1].wait(5)
        leave[first_out].set()
        threads[first_out].join(5)
        assert controller.threads == 1  # (the other still works)
        leave[1 - first_out].set()
        threads[1 - first_out].join(5)
        assert seen == [1, 1] and controller.threads == 4


def test_the_threads_are_restored_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    controller = _Controller()
    monkeypatch.setattr(_blas, "_controller", lambda: controller)
    with pytest.raises(ValueError), one_blas_thread():
        assert controller.threads == 1
        raise ValueError
    assert controller.threads == 4
