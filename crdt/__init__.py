"""crdt: a durable, authenticated, replicated grow-only set of immutable records.

Standalone: never imports metaopt. Records (canonical msgpack, BLAKE2b-256 keys), the Store port
with in-memory and LevelDB adapters, per-origin version vectors, sans-IO reconciliation sessions
and authenticated wire frames.
"""

from __future__ import annotations

from crdt._errors import (
    CrdtError,
    FrameError,
    MalformedRecord,
    NonCanonicalRecord,
    OversizedRecord,
    ProtocolError,
    RecordError,
    SessionBusy,
    StoreError,
    StoreLocked,
    StoreWriteFailed,
)
from crdt._frames import (
    TICKET_SIZE,
    ClusterKey,
    FrameCodec,
    FrameConfig,
    InvalidClusterKey,
    MalformedFrame,
    OpenedFrame,
    OversizedFrame,
    ReplayedFrame,
    StaleFrame,
    TamperedFrame,
    UnknownKey,
    UnsupportedFrameVersion,
)
from crdt._leveldb import LevelDBStore
from crdt._memory import MemoryStore
from crdt._reconcile import (
    Initiator,
    SyncConfig,
    SyncStats,
    push_message,
    respond,
    respond_steps,
)
from crdt._record import KEY_SIZE, MAX_RECORD_SIZE, ORIGIN_SIZE, Record, canonical_packb, key_of
from crdt._store import Bound, SetFingerprint, Store, Subscriber
from crdt._vector import SeqSet, VersionVector

__all__ = [
    "KEY_SIZE",
    "MAX_RECORD_SIZE",
    "ORIGIN_SIZE",
    "TICKET_SIZE",
    "Bound",
    "ClusterKey",
    "CrdtError",
    "FrameCodec",
    "FrameConfig",
    "FrameError",
    "Initiator",
    "InvalidClusterKey",
    "LevelDBStore",
    "MalformedFrame",
    "MalformedRecord",
    "MemoryStore",
    "NonCanonicalRecord",
    "OpenedFrame",
    "OversizedFrame",
    "OversizedRecord",
    "ProtocolError",
    "Record",
    "RecordError",
    "ReplayedFrame",
    "SeqSet",
    "SessionBusy",
    "SetFingerprint",
    "StaleFrame",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreWriteFailed",
    "Subscriber",
    "SyncConfig",
    "SyncStats",
    "TamperedFrame",
    "UnknownKey",
    "UnsupportedFrameVersion",
    "VersionVector",
    "canonical_packb",
    "key_of",
    "push_message",
    "respond",
    "respond_steps",
]
