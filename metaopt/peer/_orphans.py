"""Trial processes left behind: by a peer killed -9 (found on restart and stopped), or by a
trial whose children left its process group (``setsid``), found when its run ends.

Every trial runs in its own process group with ``METAOPT_TRIAL_ID`` and ``METAOPT_DATA_DIR``
(the peer's data directory) in its environment, which everything it starts inherits. A peer
that dies without stopping them leaves them holding their GPU, writing into the trial
directory, and running beside the re-run of the same trial. The data directory is locked by
one live peer at a time, so once the restarted peer holds the lock, every process of a trial
of that data directory is an orphan. Linux only (it reads /proc); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["find_orphans", "kill_orphans"]

_TRIAL = b"METAOPT_TRIAL_ID="
_SUBREAPER = b"METAOPT_SUBREAPER=1"  # (_subreaper.py: the parent of a trial's command)


def find_orphans(
    data_dir: Path | str, proc: Path = Path("/proc"), trial: str | None = None
) -> dict[int, int]:
    """Process id -> process group of every trial process of this data directory (of one
    trial, given its id in hex).

    Only processes this user may read are seen, which are the only ones a peer starts. A
    trial's subreaper is not among them: it ends itself once its command has, and killed at
    the same moment as a stubborn command it could not kill what the command left behind.
    """
    mark = b"METAOPT_DATA_DIR=" + os.fsencode(str(data_dir))
    wanted = _TRIAL if trial is None else _TRIAL + trial.encode()
    found: dict[int, int] = {}
    try:
        entries = list(proc.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            # The 5th field of stat, after the command in parentheses, is the process group.
            stat = (entry / "stat").read_bytes()
            pgid = int(stat[stat.rindex(b")") + 2 :].split()[2])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, another user's, or not a process
        if _SUBREAPER in environ:
            continue  # it ends itself once its command has, killing what that left
        if mark in environ and any(
            item.startswith(_TRIAL) and (trial is None or item == wanted) for item in environ
        ):
            found[int(entry.name)] = pgid
    return found


def kill_orphans(
    data_dir: Path | str, proc: Path = Path("/proc"), trial: str | None = None
) -> list[int]:
    """SIGKILL every trial process of this data directory (of one trial, given its id in
    hex) and its process group.

    Call it only while holding the data directory's lock, and for a trial only once its run
    here has ended: no live run's process may be among them. Returns the process ids found.
    """
    found = find_orphans(data_dir, proc, trial)
    mine = os.getpgid(0)
    for pid, pgid in found.items():
        with contextlib.suppress(OSError):
            if pgid != mine:
                os.killpg(pgid, signal.SIGKILL)  # its children too, whatever their environment
            os.kill(pid, signal.SIGKILL)
    return sorted(found)
