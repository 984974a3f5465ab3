"""A peer's watchdog: stops every trial process group of the peer when the peer dies.

A peer killed -9 (or by the OOM killer) and not restarted left its trials running beside
their re-runs on other peers: two processes on the same parameters, and a shell script's own
children out of reach of any signal sent to the script alone. The watchdog is a small process
of its own session, started with the peer; the peer tells it each trial's process group as it
starts and ends, through a pipe. When the pipe reaches its end — the peer exited, however it
died, for the kernel closes a dead process's files — the watchdog sends SIGTERM to every
group still listed, and to the groups of the peer's trial processes that left theirs (see
_escaped), SIGKILL to what is left after the grace period, and exits.

The peer never waits on the pipe: a watchdog that stops reading (stopped with SIGSTOP, say)
filled it after a few thousand trial starts, and the next write held up the peer's whole
event loop. What the pipe does not take is kept as the difference between the groups the
watchdog must know and those it was told, so it stays as small as the running trials however
long the watchdog does not read, and a watchdog started again is simply told every group.

Run as ``python -I path/to/_watchdog.py GRACE [DATA_DIR]``, or as the peer runs it: this
source as the peer read it at its start, by ``python -I -c`` (see _scripts: the file may be
another version's by then), with _orphans.py's source as read then, which it runs at its
peer's death. It reads lines ``+PGID`` and ``-PGID``. It imports nothing beyond the standard
library (importing the metaopt package would load numpy), so it starts in a few tens of
milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Watchdog"]

log = logging.getLogger("metaopt.peer")


class Watchdog:
    """The peer's side: starts the watchdog process and tells it the trials' groups.

    Its methods never block. Run on an event loop, what the pipe does not take now is written
    when the pipe takes it; without one, at the next call.
    """

    def __init__(
        self, grace: Callable[[], float], data_dir: Callable[[], Path] | None = None
    ) -> None:
        """grace: SIGTERM to SIGKILL, in seconds; data_dir: the peer's, whose trial processes
        that left their groups it stops too (both read when the watchdog starts)."""
        self._grace = grace
        self._data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None  # its write end, non-blocking
        # Closes the pipe whatever ends this side: close(), a start again, or being dropped
        # unclosed (never a kill -9, which the watchdog must outlive: the kernel closes it).
        self._end: Callable[[], object] | None = None
        self._groups: set[int] = set()  # what the watchdog must know
        self._told: set[int] = set()  # what it knows once it has read its pipe
        self._writer: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._held = False  # the pipe was full at the last write
        self._warned = False
        self._closed = False
        self._deaths: list[float] = []  # when each watchdog died unasked (see _died)

    @property
    def backlog(self) -> int:
        """How many changes to its groups the watchdog has not been told yet."""
        return len(self._groups ^ self._told)

    def watch(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._tell()

    def release(self, pgid: int) -> None:
        self._groups.discard(pgid)
        self._tell()

    def close(self) -> None:
        """End the watchdog (on a clean stop): at the EOF it stops what it still lists and
        exits, and it is never started again (a trial ending after the stop has nothing left
        to tell it). What its pipe does not take now is not waited for, nor is its exit: a
        trial still listed (one ignoring its stop) holds it for the grace."""
        if self._pipe is not None and not self._closed:
            with contextlib.suppress(OSError):
                self._write_pending()
        self._closed = True
        self._stop_writing()
        if self._end is not None:
            self._end()

    def _tell(self) -> None:
        """Tell the watchdog what it does not know yet, as far as its pipe takes it now."""
        if self._closed:
            return
        try:
            if self._process is None or self._process.poll() is not None:
                self._start()
            try:
                self._write_pending()
            except BrokenPipeError:  # it died since it was last seen running
                self._start()
                self._write_pending()
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot run the trial watchdog (%s): trials may outlive this peer if it"
                    " is killed; its restart stops them",
                    exc,
                )

    def _start(self) -> None:
        """Start a watchdog, again if one died (killed by hand, say): it knows no group yet,
        so it is told every group the last one knew, and none that ended meanwhile."""
        self._stop_writing()
        if self._end is not None:
            self._end()  # a dead reader's pipe closes quietly
        self._process = self._pipe = self._end = None
        self._told = set()
        self._held = False
        read, write = os.pipe()
        try:
            from metaopt.peer._scripts import ORPHANS, WATCHDOG  # (read as the peer started)

            escaped = [] if self._data_dir is None else [os.fsdecode(self._data_dir())]
            process = subprocess.Popen(
                WATCHDOG.argv(str(self._grace()), *escaped),
                stdin=read,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the peer's group is not its end
                env=_watchdog_env({**WATCHDOG.env(), _ORPHANS_CODE: ORPHANS.code}),
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._process, self._pipe = process, write
        self._end = weakref.finalize(self, os.close, write)
        # Reaped whenever it exits, however this side ended: after a close or a drop it runs
        # on for the grace when a trial is still listed, and must not be left a zombie.
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        died = weakref.WeakMethod(self._died)
        threading.Thread(
            target=_reap, args=(process, died, loop), name="metaopt-watchdog", daemon=True
        ).start()

    def _died(self, process: subprocess.Popen[bytes]) -> None:
        """The watchdog ``process`` exited, on the loop: started again at once if this side
        still runs. Started again only at the next trial's start or end, a watchdog killed
        while long trials ran left them running when the peer was killed -9 in the meantime.
        Not more than _RESTARTS times a minute: one that dies at its start is left for that."""
        if self._closed or process is not self._process:
            return
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60.0] + [now]
        quick = len(self._deaths) <= _RESTARTS
        log.warning(
            "the trial watchdog (pid %d) exited (code %s)%s",
            process.pid,
            process.returncode,
            "; started again" if quick else "; started again when a trial starts or ends",
        )
        if quick:
            self._tell()

    def _write_pending(self) -> None:
        assert self._process is not None and self._pipe is not None
        changes = [(pgid, False) for pgid in sorted(self._told - self._groups)]
        changes += [(pgid, True) for pgid in sorted(self._groups - self._told)]
        for pgid, listed in changes:
            try:
                # A line a write: under PIPE_BUF, a pipe takes all of it or none of it.
                os.write(self._pipe, f"{'+' if listed else '-'}{pgid}\n".encode())
            except BlockingIOError:
                if not self._held:
                    self._held = True
                    log.warning(
                        "the trial watchdog (pid %d) does not read its pipe (stopped?): it"
                        " is told the trials' groups once it does",
                        self._process.pid,
                    )
                self._write_later()
                return
            if listed:
                self._told.add(pgid)
            else:
                self._told.discard(pgid)
        if self._held:
            self._held = False
            log.info("the trial watchdog (pid %d) reads its pipe again", self._process.pid)
        self._stop_writing()

    def _write_later(self) -> None:
        """Write the rest when the pipe takes it (or its reader is gone), if a loop runs."""
        assert self._pipe is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._writer != (loop, self._pipe):
            self._stop_writing()
            loop.add_writer(self._pipe, self._tell)
            self._writer = (loop, self._pipe)

    def _stop_writing(self) -> None:
        if self._writer is not None:
            loop, fd = self._writer
            self._writer = None
            if not loop.is_closed():
                loop.remove_writer(fd)


_RESTARTS = 3  # watchdogs started again in a minute when one dies unasked (see Watchdog._died)


# What the watchdog keeps of its peer's environment: what its Python may need to start. All
# of it, beside its source, took a long environment past the kernel's limit (E2BIG), and the
# watchdog never ran (trials outlived a kill -9 of their peer).
_KEPT = ("PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "TMPDIR", "HOME", "LANG", "LC_ALL", "LC_CTYPE")


def _watchdog_env(code: dict[str, str]) -> dict[str, str]:
    return {**{k: os.environ[k] for k in _KEPT if k in os.environ}, **code}


def _reap(
    process: subprocess.Popen[bytes],
    died: Callable[[], Callable[[subprocess.Popen[bytes]], None] | None],
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    """Wait for the watchdog to exit (in a thread of its own), then tell its peer's side on
    the loop it was started from, if that side and the loop are still there."""
    process.wait()
    callback = died()
    if callback is not None and loop is not None:
        with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
            loop.call_soon_threadsafe(callback, process)


def _signal_groups(groups: set[int], sig: int) -> None:
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            groups.discard(pgid)  # nobody left in it
        except PermissionError:
            groups.discard(pgid)


# The variable that hands the watchdog _orphans.py's source as its peer read it (see main).
_ORPHANS_CODE = "METAOPT_ORPHANS_CODE"


def _escaped(data_dir: str, orphans_source: bytes) -> set[int]:
    """The process groups of the trial processes of data_dir (see _orphans), its own aside:
    children a trial started in a session of their own (setsid, a daemon) left its group,
    and outlived a peer that died and never came back. Read at the peer's death, before a
    peer started again there (seconds to load and catch up) can have started a trial."""
    orphans: dict[str, Any] = {"__name__": "_metaopt_orphans"}
    # (its source, not `import metaopt`, which would load numpy)
    exec(compile(orphans_source, "metaopt-orphans", "exec"), orphans)
    return set(orphans["find_orphans"](data_dir).values()) - {os.getpgid(0)}


def _orphans_source() -> bytes:
    """_orphans.py as the peer read it at its start (from the file when run by hand): an
    upgrade may have replaced the file by the peer's death, when the sweep runs."""
    handed = os.environ.get(_ORPHANS_CODE)
    if handed is not None:
        return base64.b64decode(handed)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_orphans.py"), "rb") as f:
        return f.read()


def main(argv: list[str]) -> int:
    grace = float(argv[0]) if argv else 10.0
    orphans_source = _orphans_source()  # (now, as handed: see _orphans_source)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the peer's terminal
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if len(line) < 2 or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if line[:1] == b"+":
            groups.add(pgid)
        elif line[:1] == b"-":
            groups.discard(pgid)
    if len(argv) > 1:
        with contextlib.suppress(Exception):  # (the groups it was told go first, whatever)
            groups |= _escaped(argv[1], orphans_source)
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.1)
        _signal_groups(groups, 0)  # drops the groups that are empty now
    _signal_groups(groups, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
