"""The LevelDB Store (plyvel): a peer's durable replica.

Layout, all in one database so a record and its index entries land in one atomic batch:

    r<key32>                               -> record bytes (exactly as received)
    o<origin16><seq8><key32>               -> ''   fast path: what origin X wrote after seq s
    t<time8><key32>                        -> ''   (time, key) order for range reconciliation
    l<len1><link><time8><key32>            -> ''   records linked to one experiment/trial
    k<len1><kind><time8><key32>            -> ''   records of one kind

Every batch is written with sync=True, so once ``add`` returns the records survive kill -9 and
power loss; subscribers (replication) hear of them only after that. The version vector and the
set fingerprint are rebuilt from the ``o`` index on open (about 10^5 keys/s) rather than stored,
so there is no second copy that could disagree with the records.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import plyvel

from crdt._errors import StoreError, StoreLocked
from crdt._record import KEY_SIZE, ORIGIN_SIZE, Record
from crdt._store import Bound, SetFingerprint, Subscriber
from crdt._vector import VersionVector

__all__ = ["LevelDBStore"]

_U64 = struct.Struct(">Q")
_MOD = 1 << (8 * KEY_SIZE)
_MAX_KIND_PREFIXES = 256


def _prefixed(tag: bytes, name: bytes) -> bytes:
    return tag + bytes([len(name)]) + name


class LevelDBStore:
    """A grow-only set of records in a LevelDB directory owned by one process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # No block compression: records are mostly keys, ids and floats that snappy barely
            # shrinks (4% on event records), while decompressing a block on every random read
            # halved how fast a replica reads records out to a catching-up peer. Tables written
            # compressed by an older version stay readable.
            self._db = plyvel.DB(str(self.path), create_if_missing=True, compression=None)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"the data directory {self.path} is in use by another process;"
                    " stop that peer or choose another --data-dir"
                ) from None
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None
        except (plyvel.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None
        self._vv = VersionVector()
        self._fp = SetFingerprint()
        self._count = 0
        self._subscribers: list[Subscriber] = []
        self._kind_prefixes: dict[str, bytes] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        total = 0
        for raw in self._db.iterator(prefix=b"o", include_value=False):
            origin = raw[1 : 1 + ORIGIN_SIZE]
            (seq,) = _U64.unpack_from(raw, 1 + ORIGIN_SIZE)
            self._vv.add(origin, seq)
            total += int.from_bytes(raw[-KEY_SIZE:], "little")
            self._count += 1
        self._fp = SetFingerprint(total % _MOD, self._count)

    def add(self, records: Iterable[Record]) -> list[Record]:
        new: list[Record] = []
        seen: set[bytes] = set()
        db = self._db
        held = self._vv.contains
        pack = _U64.pack
        kinds = self._kind_prefixes
        # transaction=True: if anything raises mid-batch, nothing of the batch is written.
        with db.write_batch(sync=True, transaction=True) as batch:
            put = batch.put
            for record in records:
                key = record.key
                if key in seen:
                    continue
                # A key names bytes that hold one (origin, seq), so a pair not yet held proves the
                # key new and the disk probe is needed only for duplicates and equivocations.
                if held(record.origin, record.seq) and db.get(b"r" + key) is not None:
                    continue
                seen.add(key)
                tk = pack(record.time) + key
                put(b"r" + key, record.data)
                put(b"o" + record.origin + pack(record.seq) + key, b"")
                put(b"t" + tk, b"")
                for link in record.links:
                    put(_prefixed(b"l", link) + tk, b"")
                kind = kinds.get(record.kind)
                if kind is None:
                    kind = _prefixed(b"k", record.kind.encode())
                    if len(kinds) < _MAX_KIND_PREFIXES:  # peers choose kinds; keep memory bounded
                        kinds[record.kind] = kind
                put(kind + tk, b"")
                new.append(record)
        # Only now, with the batch synced, do the in-memory summaries and listeners see them.
        note = self._vv.add
        total = self._fp.total
        for record in new:
            note(record.origin, record.seq)
            total += int.from_bytes(record.key, "little")
        self._fp = SetFingerprint(total % _MOD, self._fp.count + len(new))
        self._count += len(new)
        if new:
            for callback in list(self._subscribers):
                callback(new)
        return new

    def get(self, key: bytes) -> Record | None:
        data = self._db.get(b"r" + key)
        return None if data is None else Record.load(key, data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._db.get(b"r" + key) is not None

    def __len__(self) -> int:
        return self._count

    def version_vector(self) -> VersionVector:
        return self._vv

    def by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[Record]:
        for key, data in self.raw_by_origin(origin, lo, hi):
            yield Record.load(key, data)

    def raw_by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        start = b"o" + origin + _U64.pack(lo)
        stop = b"o" + origin + _U64.pack(hi + 1) if hi + 1 < 2**64 else b"o" + origin + b"\xff"
        get = self._db.get
        for raw in self._db.iterator(start=start, stop=stop, include_value=False):
            key = raw[-KEY_SIZE:]
            data = get(b"r" + key)
            if data is not None:
                yield key, data

    def _index_scan(self, prefix: bytes) -> Iterator[Record]:
        for raw in self._db.iterator(prefix=prefix, include_value=False):
            record = self.get(raw[-KEY_SIZE:])
            if record is not None:
                yield record

    def linked(self, link: bytes) -> Iterator[Record]:
        return self._index_scan(_prefixed(b"l", link))

    def of_kind(self, kind: str) -> Iterator[Record]:
        return self._index_scan(_prefixed(b"k", kind.encode()))

    def ordered(self, lower: Bound | None = None, upper: Bound | None = None) -> Iterator[Bound]:
        start = b"t" if lower is None else b"t" + _U64.pack(lower[0]) + lower[1]
        stop = b"u" if upper is None else b"t" + _U64.pack(upper[0]) + upper[1]
        for raw in self._db.iterator(start=start, stop=stop, include_value=False):
            (time,) = _U64.unpack_from(raw, 1)
            yield (time, raw[9:])

    def fingerprint(self) -> SetFingerprint:
        return SetFingerprint(self._fp.total, self._fp.count)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def close(self) -> None:
        self._subscribers.clear()
        if not self._db.closed:
            self._db.close()

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
