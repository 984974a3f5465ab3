"""Holding a Ctrl-C until a store's write and its bookkeeping are both done."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["interrupts_held"]


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block whole: a Ctrl-C landing in it raises KeyboardInterrupt once it is done.

    Python raises KeyboardInterrupt at whatever bytecode runs when SIGINT arrives; between a
    synced write and the in-memory summaries and listeners that follow it, that left them
    behind the disk until the store was opened again (a notebook's "interrupt kernel" during a
    Study's tell()), the version vector then handing out a seq already used.

    Only where Python's own handler would raise: in the main thread with SIGINT's default
    handler. An asyncio runner's or a peer's handler raises nothing mid-block, and one a user
    installed is theirs to keep.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if caught:  # (over an error of the block too: the user asked to stop, and is told)
            raise KeyboardInterrupt
