"""A stopped peer's replica, read in place: status, best, export and logs without a peer.

The replica is on disk whether or not its peer runs, and a user whose peer is stopped (or
whose machine is off the network) still wants to read the results. The store is opened for
the one call and closed at once: LevelDB allows one process at a time, so a peer starting
meanwhile waits a moment for it (see Node's _open_store), and a read while a peer starts is
told to try again.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdt import LevelDBStore, StoreError, StoreLocked
from metaopt._collector import collector_paused
from metaopt._errors import MetaoptError
from metaopt._records import TRIAL, ExperimentSpec
from metaopt.peer._api import LocalApi
from metaopt.peer._clean import carry_out, clean_reply
from metaopt.peer._config import Timing
from metaopt.peer._identity import DataDir, trial_log_path
from metaopt.peer._replica import Replica
from metaopt.peer._storage import says_disk_full
from metaopt.peer._wire import Request

__all__ = ["WITHOUT_PEER", "OfflinePeer"]

# What needs no running peer: reading the replica and trial logs, and deleting the folders
# of ended trials (a stopped peer runs none).
WITHOUT_PEER = frozenset({"api.experiments", "api.experiment", "api.logs", "api.clean"})


@dataclass
class _PeerConfig:
    timing: Timing = field(default_factory=Timing)


class _StoppedRunner:
    def __init__(self, dirs: DataDir) -> None:
        self._dirs = dirs

    def log_path(self, trial: bytes) -> Path:
        return trial_log_path(self._dirs, trial)

    def stopping_as(self, trial: bytes) -> str | None:
        return None

    def running_keys(self) -> frozenset[bytes]:
        return frozenset()


class _NoPeers:
    def get(self, node_id: bytes) -> None:
        return None


class _StoppedNode:
    """What LocalApi reads of its node, for one that is not running: it starts nothing (so
    nothing is blocked) and knows no peer's address. It calls every node live: what it holds
    is a snapshot, and "node silent for a day" would be a claim about a peer it cannot know."""

    def __init__(self, dirs: DataDir, replica: Replica) -> None:
        self.node_id = dirs.node_id()
        self.dirs = dirs
        self.replica = replica
        self.runner = _StoppedRunner(dirs)
        self.peers = _NoPeers()
        self.config = _PeerConfig()

    def clock(self) -> float:
        return time.time()

    def is_alive(self, node_id: bytes) -> bool:
        return True

    def blocked_here(self, experiment: bytes) -> str | None:
        return None

    def loading_progress(self) -> None:
        return None  # (what it folds, it folds when it is opened)


def _folded_for(
    op: str, body: Any, store: LevelDBStore
) -> Callable[[bytes, ExperimentSpec], bool] | None:
    """Which experiments a call needs folded: for one experiment's, those its name or id could
    find (its namesakes among them), not the whole replica (3 s for a 200-trial experiment
    beside one of 50,000); for one trial's log, those of the trials its id could name (the
    trial records alone are read to find them: a fold of 2 million records took 34 s); None
    (every one) for the others."""
    text = body.get("experiment") if isinstance(body, dict) else body
    if op == "api.logs" and isinstance(text, str):
        prefix = text.strip().lower()
        of = {
            r.links[0] for r in store.of_kind(TRIAL) if r.key.hex().startswith(prefix) and r.links
        }
        return lambda key, spec: key in of
    if op != "api.experiment" or not isinstance(text, str):
        return None
    return Replica.findable(text)


class OfflinePeer:
    """Answers the read-only API calls from the replica of a data directory no peer runs on."""

    def __init__(
        self,
        data_dir: Path,
        patience: float = 30.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.dirs = DataDir(data_dir)
        self._on_wait = on_wait  # told once when a read waits for another (a CLI says so)
        # How long a read waits for another holding the replica (LevelDB lets one process in
        # at a time: two `status` at once failed 1 time in 30). A read of a million records
        # holds it 12-20 s; a Study holds it until it closes.
        self._patience = patience
        root = self.dirs.root
        gone = self.dirs.replica_gone()
        self._refuse_if_gone()
        if gone or not DataDir.holds_peer(root):
            raise MetaoptError(
                f"no peer is running on {root}, nor has one run there; start one with"
                f" `metaopt peer start --data-dir {shlex.quote(str(root))}`"
            )

    def call(self, op: str, body: Any = None) -> Any:
        root = self.dirs.root
        if op not in WITHOUT_PEER:
            raise MetaoptError(
                f"no peer is running on {root}; start one with `metaopt peer start --data-dir"
                f" {shlex.quote(str(root))}` (without one, only status, best, export, logs and"
                " clean work)"
            )
        if op in ("api.experiment", "api.experiments") and isinstance(body, dict):
            # No frame to fit in, and each call opens and folds the whole replica: one page.
            body = {**body, "page_bytes": None}
        copy: tempfile.TemporaryDirectory[str] | None = None
        try:
            store = self._open()
        except StoreLocked:
            raise MetaoptError(
                f"the replica of {root} is in use (its peer is starting, a Study holds it, or"
                " another read has for long); try again in a moment"
            ) from None
        except StoreError as exc:
            said = str(exc)
            if not says_disk_full(said):  # (over quota too: a home folder on a lab's cluster)
                if "read-only file system" in said.lower():
                    # (LevelDB takes a lock file even to read: the error said nothing to do.)
                    said += (
                        f"; reading it takes a lock file there: copy {root} somewhere writable"
                        " and read the copy with --data-dir"
                    )
                raise MetaoptError(said) from None
            # Opened, LevelDB writes a new manifest and log: on the full disk that `clean` is
            # there to free (the peer stopped, as it cannot start there either), every read
            # failed and nothing could free it. A copy elsewhere is read instead.
            copy, store = self._open_copy(said)
        try:
            return self._call(store, op, body)
        except OSError as exc:
            # A damaged data directory or a failing disk (a log that is a directory, EIO):
            # the live peer says one line for it, and so does this, not a traceback.
            raise MetaoptError(
                f"{exc.filename or root}: {exc.strerror or exc}; check the disk and the data"
                " directory"
            ) from None
        finally:
            if copy is not None:
                copy.cleanup()

    def _open_copy(self, said: str) -> tuple[tempfile.TemporaryDirectory[str], LevelDBStore]:
        """The replica copied to the temporary directory (another disk, as a rule), opened."""
        copy = tempfile.TemporaryDirectory(prefix="metaopt-replica-")
        try:
            replica = Path(copy.name) / "replica"
            shutil.copytree(self.dirs.replica, replica, ignore=shutil.ignore_patterns("LOCK"))
            return copy, LevelDBStore(replica)
        except (OSError, StoreError) as exc:
            copy.cleanup()
            raise MetaoptError(
                f"{said}; nor could it be read from a copy in {tempfile.gettempdir()} ("
                f"{getattr(exc, 'strerror', None) or exc}): free some space on the data"
                " directory's disk by hand, then try again"
            ) from None

    def _call(self, store: LevelDBStore, op: str, body: Any) -> Any:
        try:
            # The fold is a few objects a record, kept until the call returns: the collector
            # is held off meanwhile (its passes over them were 0.6 s of 3.6 at 200,000
            # records), and so the replica need not hide them from it (freeze_every).
            with collector_paused():
                replica = Replica(store, freeze_every=0, only=_folded_for(op, body, store))
                try:
                    node = _StoppedNode(self.dirs, replica)
                    api = LocalApi(node)  # type: ignore[arg-type]
                    if op == "api.clean":
                        plan, dry_run = api.clean_plan(body)
                    else:
                        request = Request(op, node.node_id, "", body)
                        return asyncio.run(api.handlers()[op](request))
                finally:
                    replica.close()
        finally:
            store.close()
        # The replica is free again before the deletion, which may take long: a peer started
        # meanwhile gave up waiting for it.
        return clean_reply(carry_out(plan, self.dirs.clean_lock, dry_run=dry_run))

    def _refuse_if_gone(self) -> None:
        """A MetaoptError if the replica a peer made here is gone: opened, it would be made
        anew, empty, and the peer would take it for the one its node id wrote into (see
        DataDir.note_if_lost). (It said no peer had run there.)"""
        if self.dirs.replica_gone() and self.dirs.made_replica():
            raise MetaoptError(
                f"the replica of the peer that ran on {self.dirs.root} is gone (moved aside or"
                " deleted); start the peer there to get its records back from its peers:"
                f" `metaopt peer start --data-dir {shlex.quote(str(self.dirs.root))}`"
            )

    def _open(self) -> LevelDBStore:
        """The replica's store, waited for while another read holds it (not a peer: one that
        is starting keeps it, and answers the next try itself)."""
        began = time.monotonic()
        said = False
        while True:
            self._refuse_if_gone()  # (at each try: moved aside while this read waited)
            try:
                return LevelDBStore(self.dirs.replica)
            except StoreLocked:
                if self.dirs.running_pid() is not None:
                    raise
                waited = time.monotonic() - began
                if waited > self._patience:
                    raise
                if waited > 1.0 and not said and self._on_wait is not None:
                    said = True
                    self._on_wait(
                        f"waiting for another process reading {self.dirs.replica} (up to"
                        f" {self._patience:g} s)"
                    )
                time.sleep(0.05)
