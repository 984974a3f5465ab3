"""An experiment's code on this peer: its bundle laid out once from the replicated blobs, and
each trial's copy of it.

The bundle is written in a worker thread, which reads each chunk through the event loop (the
store's only user); a trial's copy is made by the executor before its process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from metaopt._errors import MetaoptError
from metaopt._state import ExperimentState
from metaopt.peer._bundle import (
    BundleWriteError,
    bundle_damage,
    content_digest,
    materialize_bundle,
)
from metaopt.peer._durable import sync_folder, sync_tree

if TYPE_CHECKING:
    from metaopt.peer._node import Node

__all__ = ["SHARED_OVER", "CodeLayouts"]

log = logging.getLogger("metaopt.peer")

# Bytes: a file of an experiment's code larger than this is shared by its trials' copies (a
# hard link, read-only); smaller ones are copied (see _link_tree).
SHARED_OVER = 1 << 20


class CodeLayouts:
    """The experiments' bundles laid out on this peer, one folder an experiment, for its
    trials (a TrialRunner's)."""

    def __init__(self, node: Node, monotonic: Callable[[], float]) -> None:
        self.node = node
        self.monotonic = monotonic  # (a refused write is said once a minute by it)
        self._bundle_warned: dict[bytes, float] = {}  # when a bundle's write was last refused
        self._bundles: dict[bytes, Path] = {}
        self._laying_out: dict[bytes, asyncio.Task[None]] = {}  # bundles being written
        self._closing = False  # the peer is stopping: layouts end (see settle)
        # Experiments whose bundle is broken for good (a manifest never changes): not tried
        # again on every scheduling pass, nor logged again.
        self.unrunnable: dict[bytes, str] = {}  # experiment key -> why

    def laid_out(self, state: ExperimentState) -> bool:
        """Whether the experiment's bundle is laid out here; one not begun is begun, in a
        thread (see TrialRunner.can_run). One laid out by this peer's last life is checked
        there first (see _materialize)."""
        held = self._bundles.get(state.key)
        if held is not None and held.is_dir():  # (a user may have deleted it to free space)
            return True
        if state.key in self.unrunnable or state.key in self._laying_out or self._closing:
            return False
        task = asyncio.ensure_future(self._lay_out(state))
        self._laying_out[state.key] = task
        task.add_done_callback(lambda _: self._laying_out.pop(state.key, None))
        return False

    async def laid_out_within(self, state: ExperimentState, timeout: float) -> bool:
        """laid_out, waiting up to ``timeout`` seconds for a layout it begins or finds under
        way (a thaw asked by hand: refused at once, it worked when asked again seconds
        later)."""
        if self.laid_out(state):
            return True
        task = self._laying_out.get(state.key)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return self.laid_out(state)

    def trial_copy(self, experiment: bytes, cwd: Path) -> Callable[[], None]:
        """What lays out a trial's copy of the experiment's code at cwd (once laid_out)."""
        return functools.partial(_lay_out_code, self._bundles[experiment], cwd)

    async def _lay_out(self, state: ExperimentState) -> None:
        """Write the experiment's bundle in a thread; what fails is said as can_run did."""
        loop = asyncio.get_running_loop()

        def chunk(digest: bytes) -> bytes:  # (in the thread)
            if self._closing:
                raise _MissingBlob("the peer is stopping")  # (laid out again at its restart)
            return asyncio.run_coroutine_threadsafe(self._chunk(digest), loop).result()

        try:
            self._bundles[state.key] = await asyncio.to_thread(self._materialize, state, chunk)
        except _MissingBlob:
            pass  # its code has not replicated here yet; tried again next round
        except BundleWriteError as exc:
            # Tried again at every pass (twice a second): said once a minute.
            now = self.monotonic()
            if now >= self._bundle_warned.get(state.key, -math.inf) + 60.0:
                self._bundle_warned[state.key] = now
                log.warning("experiment %s cannot run here yet: %s", state.spec.name, exc)
        except MetaoptError as exc:
            log.warning("experiment %s cannot run here: %s", state.spec.name, exc)
            self.unrunnable[state.key] = str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failing, say: tried again next round, said
            # once a minute (each pass starts a layout anew), never an unretrieved task error
            if self.node.storage.note(exc, "a bundle's layout"):
                return
            now = self.monotonic()
            if now >= self._bundle_warned.get(state.key, -math.inf) + 60.0:
                self._bundle_warned[state.key] = now
                log.warning("experiment %s: laying out its code failed: %s", state.spec.name, exc)

    async def settle(self) -> None:
        """End the bundle layouts under way, their threads at their next chunk, and wait for
        them: a peer stopping closes the store they read through the loop."""
        self._closing = True
        for task in list(self._laying_out.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _materialize(self, state: ExperimentState, chunk: Callable[[bytes], bytes]) -> Path:
        """Lay out the bundle, in a worker thread: ``chunk`` reads each chunk on the event
        loop, which alone touches the store (a probe may close and reopen it)."""
        dest = self.node.dirs.bundles / state.key.hex()[:16]
        manifest = (state.spec.bundle or {})["manifest"]
        if dest.exists():  # laid out by this peer's last life, or by a layout before this one
            damage = bundle_damage(manifest, dest)
            if damage is None:
                return dest
            # (Laid out before its data was synced, a crash left 0-byte files: every trial
            # of the experiment failed here at once, and used up its budget.)
            log.warning(
                "experiment %s: its code laid out here is damaged (%s; a crash?): laid out again",
                state.spec.name,
                damage,
            )
            try:
                _remove(dest)
            except OSError as exc:
                raise BundleWriteError(f"cannot remove the damaged {dest}: {exc}") from None
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            materialize_bundle(manifest, chunk, tmp)
            try:
                sync_tree(tmp)  # (see _durable: on the disk before its name says it is whole)
                os.replace(tmp, dest)
                sync_folder(dest.parent)
            except OSError as exc:
                raise BundleWriteError(f"cannot write {dest}: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # no half-written code left behind
            raise
        return dest

    async def _chunk(self, digest: bytes) -> bytes:
        # Any peer may link a blob to any digest: one whose bytes do not match is passed
        # over, or a forged one would make the code unrunnable for good (it stays in every
        # replica, and a later submit of the same code links to the same digest).
        for record in self.node.store.linked(digest):
            data = record.body.get("data") if isinstance(record.body, dict) else None
            if isinstance(data, bytes) and record.kind == "blob" and content_digest(data) == digest:
                return data
        raise _MissingBlob(digest.hex())


class _MissingBlob(Exception):
    pass


def _lay_out_code(bundle: Path, cwd: Path) -> None:
    """A trial's copy of its experiment's code at cwd, unless there from an earlier run. Laid
    out beside it, then renamed into place: a peer killed mid-layout left part of the tree,
    which the re-run of its lost trial here took for whole (failed for good on a module not
    yet linked)."""
    if cwd.exists():
        return
    partial = cwd.with_name(cwd.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _link_tree(bundle, partial)
    sync_tree(partial)  # (a crash left 0-byte files, which the re-run here took for whole)
    os.replace(partial, cwd)
    sync_folder(cwd.parent)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree. Raises OSError."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _link_tree(src: Path, dest: Path) -> None:
    """A trial's copy of its experiment's code: each file copied, but for those over
    SHARED_OVER bytes, shared by the trials as a hard link made read-only.

    Every file was a hard link: a trial that wrote into a file of its code in place (appended
    to a results file it was submitted with, rewrote a config) changed it in the bundle, and
    so for every later trial of the experiment on this peer. Large files (data, weights) stay
    shared, one copy on the disk; read-only, a write into one fails with a permission error
    rather than change it for the others. Not for root, whom the mode does not stop (a
    soak's peers, as in many containers): a peer run as root copies every file.
    """
    shared_over = SHARED_OVER if os.geteuid() != 0 else math.inf
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        info = path.stat()
        if info.st_size > shared_over:
            if info.st_mode & 0o222:
                os.chmod(path, info.st_mode & ~0o222)
            try:
                os.link(path, target)
                continue
            except OSError:  # another file system, or no links: a copy
                pass
        shutil.copy2(path, target)
    dest.mkdir(parents=True, exist_ok=True)
