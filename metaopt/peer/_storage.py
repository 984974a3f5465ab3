"""What a peer does while its disk refuses writes: full, read-only, or failing.

A peer that cannot write its replica can record nothing: not a trial it starts, not a result,
not a record another peer sends. It logged a traceback for each refused write (547 KB in 65 s,
on the full disk where its log was too), kept answering its peers, so its trials showed
"running" everywhere for as long as the disk stayed full, and took its own trials for lost
at every pass. Once a write fails it says so once a minute, starts nothing and stops talking to
its peers, who then see it gone and run its trials elsewhere, until a write succeeds again: the
store is probed every ``hold`` seconds (crdt's LevelDBStore.probe, which also opens it again).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

from crdt import StoreWriteFailed

__all__ = ["StorageTrouble", "disk_advice", "says_disk_full", "storage_failure", "with_disk_advice"]

log = logging.getLogger("metaopt.peer")

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EFBIG})


def says_disk_full(text: str) -> bool:
    """Whether an error's text (LevelDB's, through plyvel, is text, not an errno) says the disk
    is full: out of space, or the folder over its quota."""
    said = text.lower()
    return "no space left on device" in said or "disk quota exceeded" in said


def disk_advice(why: str) -> str:
    """What to do about a disk that refused a write, by what it said: every refusal advised
    freeing space, a read-only disk's too."""
    said = why.lower()
    if "read-only file system" in said:
        return "make its disk writable again (remount it read-write)"
    if "input/output error" in said:
        return "check its disk, which fails to write (see dmesg), or move its data elsewhere"
    if "permission denied" in said or "operation not permitted" in said:
        return "give the user it runs as write access to its data directory"
    return "free space on its disk"


def with_disk_advice(said: str, instead: str) -> str:
    """An error opening a store, with what to do when its disk is full or read-only (opening
    writes a log and a table): it said "cannot open the store ...", no more. ``instead``
    names the other way out (another directory)."""
    if says_disk_full(said) or "read-only file system" in said.lower():
        return f"{said}; free space on its disk (or make it writable), or {instead}"
    return said


def storage_failure(exc: BaseException) -> str | None:
    """What a write error says of the disk, if it is the disk's fault (full, read-only,
    failing); None for anything else, which is a bug to report in full."""
    if isinstance(exc, StoreWriteFailed):
        return exc.disk
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return exc.strerror or str(exc)
    return None


class StorageTrouble:
    """The peer's memory of its disk refusing writes (see the module docstring)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every: float = 60.0, hold: float = 10.0
    ) -> None:
        self._clock = clock
        self._every = every
        self._hold = hold
        self._failed_at: float | None = None
        self._probed_at = 0.0
        self._said_at: float | None = None
        self._why = ""
        self.suppressed = 0

    def note(self, exc: BaseException, where: str) -> bool:
        """Take note of exc if it is the disk's fault (logging it at most once a minute);
        whether it was."""
        why = storage_failure(exc)
        if why is None:
            return False
        now = self._clock()
        if self._failed_at is None:
            self._failed_at = self._probed_at = now
        self._why = why
        if self._said_at is not None and now - self._said_at < self._every:
            self.suppressed += 1
            return True
        self._said_at = now
        log.error(
            "cannot write the replica (%s, in %s; %d more such failures since the last line):"
            " this peer records nothing, starts no trial and stops answering its peers until"
            " it can; %s",
            why,
            where,
            self.suppressed,
            disk_advice(why),
        )
        self.suppressed = 0
        return True

    def recovered(self) -> bool:
        """A write succeeded; whether that ends a failure (the peer was holding back)."""
        if self._failed_at is None:
            return False
        log.warning("the replica can be written again: this peer goes on")
        self._failed_at = None
        self._said_at, self.suppressed = None, 0  # (a new failure is news at once)
        return True

    def problem(self) -> str | None:
        """Why this peer holds back now, or None: a write failed, and none succeeded since."""
        return None if self._failed_at is None else f"cannot write its replica ({self._why})"

    def probe_due(self) -> bool:
        """Whether to try the store again now (every ``hold`` seconds while it fails)."""
        now = self._clock()
        if self._failed_at is None or now - self._probed_at < self._hold:
            return False
        self._probed_at = now
        return True
