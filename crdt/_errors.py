"""The one root of every error the crdt package raises."""

from __future__ import annotations

__all__ = [
    "CrdtError",
    "FrameError",
    "MalformedRecord",
    "NonCanonicalRecord",
    "OversizedRecord",
    "ProtocolError",
    "RecordError",
    "SessionBusy",
    "StoreError",
    "StoreLocked",
]


class CrdtError(Exception):
    """Root of the crdt package's errors."""


class RecordError(CrdtError, ValueError):
    """Bytes that are not a valid record, or a record that cannot be built."""


class MalformedRecord(RecordError):
    """The bytes do not decode to a record of the known layout."""


class NonCanonicalRecord(RecordError):
    """The bytes decode, but not in the one canonical encoding, so their key would be ambiguous."""


class OversizedRecord(RecordError):
    """The record is larger than the configured limit."""


class ProtocolError(CrdtError):
    """A peer sent a reconciliation message that breaks the protocol; nothing of it was stored."""


class SessionBusy(CrdtError):
    """The responder refused a session's request: it has a session of its own with the sender
    under way, and one session between two peers at a time is enough (pushes are still taken)."""


class FrameError(CrdtError):
    """A wire frame failed a check (see the subclasses in crdt._frames); nothing of it was used."""


class StoreError(CrdtError):
    """The store cannot be opened or written."""


class StoreLocked(StoreError):
    """Another process holds the store's data directory."""


class StoreWriteFailed(StoreError):
    """The disk refused a write (full, read-only, failing): nothing of the batch is stored.
    ``disk`` is the system's word for why (e.g. "No space left on device")."""

    def __init__(self, message: str, disk: str) -> None:
        super().__init__(message)
        self.disk = disk
