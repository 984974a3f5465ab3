"""Holding a Ctrl-C until a store's write and its bookkeeping are both done."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["interrupts_held"]

_Handler = Callable[[int, FrameType | None], Any]


class interrupts_held:  # (lower case: used as a statement, with interrupts_held(): ...)
    """Run the block whole: SIGINT's handler (a KeyboardInterrupt, an asyncio runner's
    cancel) runs once the block is done; a second Ctrl-C lets both through at once.

    Python runs a signal's handler at whatever bytecode runs when the signal arrives: between
    a synced write and the in-memory summaries and listeners that follow it, a Ctrl-C left
    them behind the disk until the store was opened again (a notebook's "interrupt kernel"
    during a Study's tell()), the version vector then handing out a seq already used. The
    second Ctrl-C, as asyncio.run's, is the way out of a block that does not end (a
    subscriber stuck waiting on another thread).

    Only in the main thread, where Python runs handlers, and under a handler written in
    Python (not one that ignores SIGINT, or that C code installed).
    """

    __slots__ = ("_held", "_original")

    def __enter__(self) -> None:
        self._held: list[tuple[int, FrameType | None]] = []
        self._original: _Handler | None = None
        if threading.current_thread() is not threading.main_thread():
            return
        original = signal.getsignal(signal.SIGINT)  # (None: installed by C, not restorable)
        if callable(original):
            self._original = original
            signal.signal(signal.SIGINT, self._hold)

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self._held.append((signum, frame))
        if len(self._held) > 1:
            self._let_through()

    def _let_through(self) -> None:
        """Put the original handler back (unless the block installed its own) and run it
        for each Ctrl-C held, in order; the first that raises ends it."""
        original, self._original = self._original, None
        if original is None:
            return
        installed = signal.signal(signal.SIGINT, original)
        if installed != self._hold and installed is not None:
            signal.signal(signal.SIGINT, installed)  # (the block's own handler is kept)
        held, self._held = self._held, []
        for signum, frame in held:
            original(signum, frame)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Over an error of the block too: a Ctrl-C is the user asking to stop, and is told.
        self._let_through()
