"""A peer's watchdog: stops every trial process group of the peer when the peer dies.

A peer killed -9 (or by the OOM killer) and not restarted left its trials running beside
their re-runs on other peers: two processes on the same parameters, and a shell script's own
children out of reach of any signal sent to the script alone. The watchdog is a small process
of its own session, started with the peer; the peer tells it each trial's process group as it
starts and ends, through a pipe. When the pipe reaches its end — the peer exited, however it
died, for the kernel closes a dead process's files — the watchdog sends SIGTERM to every
group still listed, SIGKILL to what is left after the grace period, and exits.

Run as ``python -I path/to/_watchdog.py GRACE`` (as a file: importing the metaopt package
would load numpy), it reads lines ``+PGID`` and ``-PGID``. It imports nothing beyond the
standard library, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = ["Watchdog"]

log = logging.getLogger("metaopt.peer")


class Watchdog:
    """The peer's side: starts the watchdog process and tells it the trials' groups."""

    def __init__(self, grace: Callable[[], float]) -> None:
        """grace: SIGTERM to SIGKILL, in seconds (read when the watchdog starts)."""
        self._grace = grace
        self._process: subprocess.Popen[bytes] | None = None
        self._warned = False
        self._groups: set[int] = set()  # what a watchdog started again must be told
        self._closed = False

    def watch(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._say(f"+{pgid}\n")

    def release(self, pgid: int) -> None:
        self._groups.discard(pgid)
        self._say(f"-{pgid}\n")

    def close(self) -> None:
        """End the watchdog (on a clean stop): at the EOF it stops what is still listed and
        exits, and it is never started again (a trial ending after the stop has nothing left
        to tell it). With nothing listed it exits at once and is reaped here; a trial still
        listed (one ignoring its stop) would hold it for the grace, which the peer's loop
        does not wait for."""
        self._closed = True
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            if not self._groups:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=2)

    def _say(self, line: str) -> None:
        if self._closed:
            return
        try:
            if self._process is None or self._process.poll() is not None:
                if self._process is not None and self._process.stdin is not None:
                    with contextlib.suppress(OSError):  # its reader is gone
                        self._process.stdin.close()
                self._process = subprocess.Popen(
                    [sys.executable, "-I", os.path.abspath(__file__), str(self._grace())],
                    bufsize=0,  # each line reaches it whole, or fails here and now
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,  # a signal to the peer's group is not its end
                )
                # A watchdog that died (killed by hand, say) knew groups this one must too.
                line = "".join(f"+{pgid}\n" for pgid in sorted(self._groups)) + line
            assert self._process.stdin is not None
            data = line.encode()
            while data:  # unbuffered: a long replay may go in parts
                data = data[self._process.stdin.write(data) or 0 :]
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot run the trial watchdog (%s): trials may outlive this peer if it"
                    " is killed; its restart stops them",
                    exc,
                )


def _signal_groups(groups: set[int], sig: int) -> None:
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            groups.discard(pgid)  # nobody left in it
        except PermissionError:
            groups.discard(pgid)


def main(argv: list[str]) -> int:
    grace = float(argv[0]) if argv else 10.0
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
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.1)
        _signal_groups(groups, 0)  # drops the groups that are empty now
    _signal_groups(groups, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
