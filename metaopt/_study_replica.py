"""Where a Study keeps its replica: its node id, its claim on the directory, its store.

A Study with path= is a node as a peer is: its id is kept in the directory's node_id file, and
its records are numbered under it in the replica beside it, so an id must never write into a
replica that lost its records (see ``claimed_replica``), nor a Study open a peer's directory.
"""

from __future__ import annotations

import errno
import hashlib
import secrets
import warnings
from pathlib import Path

from crdt import ORIGIN_SIZE, LevelDBStore, Store, StoreError, StoreLocked
from metaopt._errors import MetaoptError
from metaopt.peer._identity import DataDir, keep_node_id
from metaopt.peer._storage import with_disk_advice

__all__ = ["checked_node_id", "claimed_replica", "node_id_for", "open_store"]


def node_id_for(seed: int, path: Path | None, given: bytes | None) -> bytes:
    """The Study's node id: the one given, else the seed's; with path= the directory's, kept
    in its node_id file (the one given, on first use)."""
    if path is None:
        # Reproducible by default: Study(seed=s) twice gives the same suggestions. Studies that
        # explore together must be given distinct node_id values.
        return given or hashlib.blake2b(b"study-node-%d" % seed, digest_size=ORIGIN_SIZE).digest()
    if DataDir(path).key_file.exists():
        # A peer's data directory has the same node_id and replica/ a Study keeps: opened as
        # a Study's, it wrote as the peer, and its experiment (no command) went to every peer.
        # (node_id= given too: it skipped this check and opened the peer's replica.)
        raise MetaoptError(
            f"{path} is a metaopt peer's data directory; a Study keeps its own: pass another path="
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Written, the one given too: reopened without node_id=, a Study took a new id and
        # never handed back the trials asked under the old one (one budget spent for good).
        # Whole or not at all: written in place on a full disk, it was left empty, and the
        # Study refused its directory for good once space returned.
        node_id = keep_node_id(path / "node_id", given or secrets.token_bytes(ORIGIN_SIZE))
    except OSError as exc:
        if path.exists() and not path.is_dir():  # (mkdir said "File exists")
            raise MetaoptError(
                f"cannot keep a Study in {path}: it is a file, not a directory; pass path= a"
                " directory"
            ) from None
        if exc.errno == errno.ENOTDIR:  # (a file on the way: free space was no help)
            raise MetaoptError(
                f"cannot keep a Study in {path}: a part of the path is a file, not a directory;"
                " pass path= a directory"
            ) from None
        raise MetaoptError(
            f"cannot keep a Study in {path}: {exc.strerror or exc}; free space on its disk (or"
            " fix its permissions), or pass path= another directory"
        ) from None
    except ValueError as exc:
        raise MetaoptError(
            f"cannot keep a Study in {path}: {exc}; delete that file (the Study takes a new"
            " node id and keeps its trials)"
        ) from None
    if given is not None and given != node_id:
        raise MetaoptError(
            f"{path} is the Study of node {node_id.hex()}; reopen it without node_id= (or with"
            " that one), or pass another path="
        )
    return node_id


def claimed_replica(root: Path, store: Store, node_id: bytes, given: bytes | None) -> bytes:
    """The node id the Study in root writes under, its replica open: a new one if the
    replica node_id made is gone (moved aside or deleted), which it says in a warning.

    Kept, the id numbered its records from 1 again, and a sync with a Study that held the
    old ones left two records under each such number in both (a review). A node_id= given
    is never changed: the Study is then refused (see DataDir.replica_claimed).
    """
    dirs = DataDir(root)
    # Read again, the lock held: another process's Study on the lost replica may have taken
    # a new id while this one read the old (then it wrote under the old one: a review).
    current = dirs.read_node_id() or node_id
    holds_own = store.version_vector().high(current) > 0
    claimed = dirs.replica_claimed(current, holds_own, renewable=given is None)
    if given is not None and claimed != given:
        raise MetaoptError(
            f"{root} is the Study of node {claimed.hex()}; reopen it without node_id= (or with"
            " that one), or pass another path="
        )
    if claimed != node_id:
        warnings.warn(
            f"the replica of node {node_id.hex()[:8]} in {root} is gone (moved aside or"
            f" deleted); this Study is node {claimed.hex()[:8]} from now on, so that none of"
            " its records takes a number an old one holds (sync brings the old ones back)",
            stacklevel=3,
        )
    return claimed


def checked_node_id(node_id: bytes | str | None) -> bytes | None:
    """node_id= as bytes (given as bytes or their hex), or a one-line MetaoptError."""
    if node_id is None:
        return None
    raw: object = node_id
    if isinstance(node_id, str):
        try:
            raw = bytes.fromhex(node_id)
        except ValueError:
            raw = None
    if not isinstance(raw, bytes) or len(raw) != ORIGIN_SIZE:
        raise MetaoptError(f"node_id must be {ORIGIN_SIZE} bytes (or their hex), got {node_id!r}")
    return raw


def open_store(path: Path) -> LevelDBStore:
    """The Study's LevelDB replica at path, or a one-line MetaoptError saying why not."""
    try:
        return LevelDBStore(path)
    except StoreLocked:
        raise MetaoptError(
            f"{path} is held by another Study, in this process or another (or a `metaopt`"
            " read of it); close() it (or let that process end) first, or pass another path="
        ) from None
    except StoreError as exc:  # crdt's own, raw: one line of ours, caught as MetaoptError
        raise MetaoptError(with_disk_advice(str(exc), "pass another path=")) from None
