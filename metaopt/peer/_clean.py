"""Freeing disk: the folders of this peer's ended trials, and code bundles no trial needs now.

A peer keeps each trial's folder after the trial ends: its checkpoints, its copy of the code
and whatever it wrote in its working directory. Over months of searches that fills the disk
(a thousand trials with a 100 MB checkpoint each is 100 GB), and nothing tells a user which
folders are safe to delete. ``metaopt clean`` deletes, on this machine only:

* the folder of every trial that has ended for good (completed, failed, killed: a terminal
  state never changes, so no run will need it again) and does not run here now (a trial ended
  by another peer's event may still be stopping here), except the ``keep`` best completed
  trials of each experiment (with several objectives, its Pareto front), whose checkpoints
  are what a search is for. The output log and the pid file stay: ``metaopt logs`` reads the
  one, and a restarted peer checks the other for a process its last life left behind.
* the code bundle laid out for an experiment that no trial can start or resume from: no
  work left (see the scheduler) and every trial ended for good (a running or frozen one may
  be thawed, and ``metaopt thaw`` needs the code). It is
  only a copy of blobs every replica holds, and laid out again if a lost trial brings work
  back.

What it frees is counted by file, each inode once, and only when every link to it goes: a
trial's code is a tree of hard links to its bundle's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaopt._state import ExperimentState, TrialView, age
from metaopt.peer._identity import DataDir, trial_dir
from metaopt.peer._scheduler import work_left

__all__ = [
    "KEPT_FILES",
    "CleanPlan",
    "carry_out",
    "clean_reply",
    "kept_trials",
    "list_folders",
    "plan_clean",
    "set_bundles_aside",
]

# What stays in an ended trial's folder: small, and read later (see the module docstring);
# the output log's older half, once it passed its size limit, too (output.log.1).
KEPT_FILES = frozenset({"output.log", "output.log.1", "pid"})


@dataclass
class CleanPlan:
    """What ``carry_out`` deletes, and what it frees."""

    paths: list[Path] = field(default_factory=list)  # files and folders, each deleted whole
    trials: int = 0  # trial folders emptied
    bundles: int = 0  # code bundles deleted
    kept: list[str] = field(default_factory=list)  # ids of the trials kept as the best
    freed: int = 0  # bytes on disk given back (counted by carry_out)
    failed: list[str] = field(default_factory=list)  # "path: why" of what could not go
    # Chosen by plan_clean, read by list_folders: the folders of the trials to empty, and
    # (id, folder) of the kept ones.
    to_empty: list[Path] = field(default_factory=list)
    to_keep: list[tuple[str, Path]] = field(default_factory=list)


def kept_trials(state: ExperimentState, keep: int) -> list[TrialView]:
    """The trials whose folders stay: the ``keep`` best completed ones, or the Pareto front."""
    if keep <= 0:
        return []
    if len(state.spec.objectives) > 1:
        return state.best()
    done = [t for t in state.trials() if t.state == "completed" and t.values is not None]
    done.sort(key=lambda t: (state.signed(t.values or ()), *age(t)))  # (best()'s ties too)
    return done[:keep]


def plan_clean(
    experiments: Iterable[ExperimentState],
    dirs: DataDir,
    running_here: Collection[bytes],
    keep: int,
) -> CleanPlan:
    """What to delete of the experiments' trials and bundles on this peer, from their states:
    the bundles by name, the trials' folders still to be read (list_folders). It reads no
    trial folder, so the peer runs it on its loop, between two launches, without a stall (a
    folder each took 0.4-0.8 s at 20,000 trials)."""
    plan = CleanPlan()
    for state in experiments:
        kept = {t.key for t in kept_trials(state, keep)}
        for trial in state.trials():
            folder = trial_dir(dirs, trial.key)
            if trial.key in kept:
                plan.to_keep.append((trial.id, folder))
            elif state.ended_for_good(trial) and trial.key not in running_here:
                plan.to_empty.append(folder)
        bundle = dirs.bundles / state.key.hex()[:16]
        # A trial not ended for good (running, stopping, frozen) may yet be frozen and thawed
        # here, by hand or by the early stopper: a bundle deleted under a running trial made
        # its thaw by hand refused until it was laid out again.
        unended = any(not state.ended_for_good(t) for t in state.trials())
        if not work_left(state) and not unended and bundle.is_dir():
            plan.paths.append(bundle)
            plan.bundles += 1
    # What an earlier clean set aside and could not delete whole.
    plan.paths += sorted(dirs.bundles.glob(f".*{_ASIDE}*"))
    return plan


def list_folders(plan: CleanPlan) -> CleanPlan:
    """Add to the plan what goes of each chosen trial's folder, and name the kept trials
    whose folders hold anything (not one an earlier clean with keep 0 emptied). Reads every
    folder: off the event loop. A trial chosen has ended for good, so its folder no longer
    changes."""
    for folder in plan.to_empty:
        doomed = _entries(folder)
        if doomed:
            plan.paths += doomed
            plan.trials += 1
    plan.kept += [trial_id for trial_id, folder in plan.to_keep if _entries(folder)]
    plan.to_empty, plan.to_keep = [], []
    return plan


def set_bundles_aside(plan: CleanPlan, bundles: Path) -> None:
    """Rename the plan's bundles out of the way at once. On the peer's event loop, where
    trials are launched: deleted from a thread, a bundle half gone was still one to link a
    starting trial's code from (a lost trial had brought work back meanwhile)."""
    for i, path in enumerate(plan.paths):
        if path.parent == bundles and not path.name.startswith("."):
            with contextlib.suppress(OSError):  # (else deleted where it is)
                plan.paths[i] = path.rename(_aside(path))


def carry_out(plan: CleanPlan, lock: Path, *, dry_run: bool = False) -> CleanPlan:
    """List the plan's folders, count what it frees, then delete it unless ``dry_run``; a
    path already gone is no error, one that cannot be deleted is named in ``plan.failed``.
    Walks the folders: run it off the event loop. ``lock`` (a file in the data directory)
    keeps two cleans, the peer's and one run with the peer stopped, from counting the same
    files twice."""
    with _locked(lock):
        list_folders(plan)
        before = _freed(plan.paths)
        if dry_run:
            plan.freed = before
            return plan
        gone: list[Path] = []  # where each path was deleted from
        for path in plan.paths:
            try:
                if path.is_dir() and not path.is_symlink():
                    # Out of the way first, at once: a bundle half deleted was still a bundle
                    # to link a starting trial's code from (a lost trial brought work back).
                    if not path.name.startswith("."):
                        with contextlib.suppress(OSError):  # (else deleted where it is)
                            path = path.rename(_aside(path))
                    gone.append(path)
                    shutil.rmtree(path, onerror=lambda _f, p, e: _failed(plan, p, e[1]))
                else:
                    gone.append(path)
                    path.unlink(missing_ok=True)
            except OSError as exc:
                _failed(plan, str(path), exc)
        # What is still there was not freed (a file the disk or its owner would not let go).
        plan.freed = before - _freed(gone)
    return plan


def clean_reply(plan: CleanPlan) -> dict[str, Any]:
    """What the CLI is told of a clean carried out."""
    return {
        "trials": plan.trials,
        "bundles": plan.bundles,
        "kept": plan.kept,
        "freed": plan.freed,
        "failed": plan.failed[:20],
        "failures": len(plan.failed),
    }


_ASIDE = ".deleting-"


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}{_ASIDE}{os.getpid()}")


def _failed(plan: CleanPlan, path: object, exc: BaseException) -> None:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    plan.failed.append(f"{path}: {why}")


# Why a disk may refuse to create the lock file while clean must still run.
_NO_LOCK_FILE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the clean lock: the data directory itself, then ``path`` in it if the disk lets
    it be made. A disk with no inode left (or a quota, a lock file another user owns) refused
    to create it, and clean, there to free that disk, failed; a clean that locked only the
    folder then let in one that made the file meanwhile (the first frees inodes as it
    deletes). Both in one order, so two cleans never wait for each other's second lock."""
    with contextlib.ExitStack() as held:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            held.enter_context(_flocked(folder))
        except OSError as exc:
            # NFS takes flock for a POSIX lock, refused on a descriptor opened read-only
            # (and a folder opens no other way): the lock file alone, as on older releases.
            if exc.errno not in (errno.EBADF, errno.ENOLCK, errno.EINVAL):
                raise
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            if exc.errno not in _NO_LOCK_FILE:
                raise  # (a damaged directory, a lock that is a folder: said in one line above)
        else:
            held.enter_context(_flocked(fd))
        yield


@contextlib.contextmanager
def _flocked(fd: int) -> Iterator[None]:
    """An exclusive flock on ``fd``, which is closed after (also if the lock is refused)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.name not in KEPT_FILES)
    except OSError:  # no folder: it never ran here
        return []


def _entries_under(paths: Iterable[Path]) -> Iterator[os.stat_result]:
    """The paths and everything under them (links not followed), lstat'ed."""
    for path in paths:
        try:
            st = path.lstat()
        except OSError:
            continue
        yield st
        if not stat.S_ISDIR(st.st_mode):
            continue
        for root, dirs, names in os.walk(path):
            for name in (*dirs, *names):
                try:
                    yield os.lstat(os.path.join(root, name))
                except OSError:
                    continue


def _freed(paths: Iterable[Path]) -> int:
    """Bytes on disk that deleting the paths gives back: a folder's own blocks, and a file's
    once all its links are among them (a kept trial's code may link to a deleted bundle's
    files). Folders were left out: 16 trials' empty folders were said to free 0 bytes."""
    links: dict[tuple[int, int], int] = {}
    stats: dict[tuple[int, int], os.stat_result] = {}
    for st in _entries_under(paths):
        inode = (st.st_dev, st.st_ino)
        links[inode] = links.get(inode, 0) + 1
        stats[inode] = st
    return sum(
        st.st_blocks * 512
        for i, st in stats.items()
        # (A folder's link count is its subfolders', never other names of it.)
        if stat.S_ISDIR(st.st_mode) or links[i] >= st.st_nlink
    )
