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
    StoreError,
    StoreLocked,
)
from crdt._leveldb import LevelDBStore
from crdt._memory import MemoryStore
from crdt._record import KEY_SIZE, MAX_RECORD_SIZE, ORIGIN_SIZE, Record, canonical_packb, key_of
from crdt._store import Bound, SetFingerprint, Store, Subscriber
from crdt._vector import SeqSet, VersionVector

__all__ = [
    "KEY_SIZE",
    "MAX_RECORD_SIZE",
    "ORIGIN_SIZE",
    "Bound",
    "CrdtError",
    "FrameError",
    "LevelDBStore",
    "MalformedRecord",
    "MemoryStore",
    "NonCanonicalRecord",
    "OversizedRecord",
    "ProtocolError",
    "Record",
    "RecordError",
    "SeqSet",
    "SetFingerprint",
    "Store",
    "StoreError",
    "StoreLocked",
    "Subscriber",
    "VersionVector",
    "canonical_packb",
    "key_of",
]
