"""What a peer process does about running out of file descriptors.

A peer holds a socket per connection, a file per trial log and LevelDB's tables. Behind a low
soft limit (1024, or 256 on some systems) connections that never finish a request (anyone on
the network can open them, no key needed) ran it out: asyncio then logged a traceback for
every refused accept, thousands a second (a 112 MB log in 40 s), and trials could not start.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LoopGuard", "raise_fd_limit"]

log = logging.getLogger("metaopt.peer")

_OUT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_MAX_FDS = 1 << 16


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (at most 65536), as a
    server does; return the soft limit now in force (-1 where there are no such limits)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(_MAX_FDS if hard == resource.RLIM_INFINITY else hard, _MAX_FDS)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError):
            pass
    return int(soft)


class LoopGuard:
    """An event loop exception handler that says "out of file descriptors" in one line a
    minute, without a traceback, and hands everything else to the handler it replaced."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = 60.0) -> None:
        self._clock = clock
        self._every = every
        self._said_at: float | None = None
        self.suppressed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF:
            now = self._clock()
            if self._said_at is not None and now - self._said_at < self._every:
                self.suppressed += 1
                return
            self._said_at = now
            log.warning(
                "out of file descriptors (%s; %d more such errors since the last line): too"
                " many connections or files are open; raise the limit (`ulimit -n`) or find"
                " who holds connections to this peer",
                exc.strerror or exc,
                self.suppressed,
            )
            self.suppressed = 0
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
