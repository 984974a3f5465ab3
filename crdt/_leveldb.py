"""The LevelDB Store (plyvel): a peer's durable replica.

Layout, all in one database so a record and its index entries land in one atomic batch:

    o<origin16><seq8><key32>               -> record bytes (exactly as received)
    r<key32>                               -> <origin16><seq8>: where o holds the bytes
    t<time8><key32>                        -> ''   (time, key) order for range reconciliation
    l<len1><link><time8><key32>            -> <origin16><seq8>  records linked to one
                                                    experiment/trial
    k<len1><kind><time8><key32>            -> <origin16><seq8>  records of one kind

The bytes live in the ``o`` entry, in (origin, seq) order, because the hot read is a peer
catching up ("everything origin X wrote after seq s"): that is one sequential scan, where bytes
kept under their hash cost one random lookup per record (reading a catch-up out took five times
as long). ``get`` by key follows ``r``'s 24-byte pointer; the link and kind entries carry the same
pointer so a fold over one experiment costs one lookup per record, as before.

Stores written before this layout hold the bytes under ``r<key32>`` and empty ``o``, ``l`` and
``k`` values; those entries are read as they are (no migration), and new records are written in
this layout beside them. The two cannot be confused: a record is at least 26 bytes long and a
pointer exactly 24.

Every batch is written with sync=True, so once ``add`` returns the records survive kill -9 and
power loss; subscribers (replication) hear of them only after that. The version vector and the
set fingerprint are rebuilt from the ``o`` keys on open rather than stored, so there is no
second copy that could disagree with the records.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn

import plyvel

from crdt._errors import StoreError, StoreLocked, StoreWriteFailed
from crdt._interrupts import interrupts_held
from crdt._record import KEY_SIZE, ORIGIN_SIZE, Record, key_of
from crdt._store import Bound, SetFingerprint, Subscriber, notify
from crdt._vector import VersionVector

__all__ = ["LevelDBStore"]

_U64 = struct.Struct(">Q")
_MAX_KIND_PREFIXES = 256
_WHERE = ORIGIN_SIZE + 8  # a pointer to an o entry: origin and seq
_RETRY_AFTER = 1.0  # seconds between attempts to open again a store whose write failed
_PROBE = b"~probe"  # written and deleted to check the disk takes writes (no record prefix)
_LENGTH = tuple(bytes((n,)) for n in range(256))  # one byte; longer names raise IndexError


def _prefixed(tag: bytes, name: bytes) -> bytes:
    return tag + _LENGTH[len(name)] + name


def _holds_data(path: Path) -> bool:
    """Whether a directory holds a LevelDB database's records: tables, or a log with writes
    in it (a crash while creating one leaves a manifest and an empty log, and no CURRENT)."""
    if not path.is_dir():
        return False
    return any(
        f.suffix in (".ldb", ".sst") or (f.suffix == ".log" and f.stat().st_size > 0)
        for f in path.iterdir()
    )


def _said(exc: plyvel.Error) -> str:
    """plyvel's message as text ("IO error: <file>: No space left on device"; plyvel gives
    it as bytes, which showed as b'Corruption: bad block type')."""
    said = exc.args[0] if exc.args else exc
    return said.decode(errors="replace") if isinstance(said, bytes) else str(said)


def _write_failed(path: Path, exc: plyvel.Error) -> StoreWriteFailed:
    """plyvel's error as one, with its last part as the disk's reason."""
    text = _said(exc)
    return StoreWriteFailed(f"cannot write the store at {path}: {text}", text.rsplit(": ", 1)[-1])


def _unreadable(path: Path, exc: plyvel.Error | str, doing: str = "read") -> StoreError:
    said = exc if isinstance(exc, str) else _said(exc)
    return StoreError(
        f"cannot {doing} the store at {path}: {said}; restore it from a copy, or move it"
        " aside to start afresh"
    )


# The store directories open in this process, by (device, inode), each with the token of
# the open that noted it: see LevelDBStore._open. Reentrant: the collector can free a store
# dropped unclosed, whose finalizer takes it, while this thread holds it (a hang).
_HELD: dict[tuple[int, int], object] = {}
_HELD_LOCK = threading.RLock()


def _let_go(held: tuple[int, int], token: object) -> None:
    """Forget ``held`` if the open of ``token`` noted it (and none other since)."""
    with _HELD_LOCK:
        if _HELD.get(held) is token:
            del _HELD[held]


class LevelDBStore:
    """A grow-only set of records in a LevelDB directory owned by one process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._token: object = None  # the open that noted its directory in _HELD
        self._let_go: weakref.finalize[[tuple[int, int], object], LevelDBStore] | None = None
        self._db = self._open()
        try:
            self._vv, self._fp = self._scan()
        except BaseException:  # a second open must say why again, not "in use"
            if not self._db.closed:  # (a damaged store's scan closed it already)
                self._db.close()
            if self._let_go is not None:
                self._let_go()
            raise
        self._subscribers: list[Subscriber] = []
        self._kind_prefixes: dict[str, bytes] = {}
        # After a write the disk refused: that failure, the batch it was writing (it may be on
        # disk after all), and when to try the disk again (see probe).
        self._failure: StoreWriteFailed | None = None
        self._unconfirmed: list[Record] = []
        self._retry_at = 0.0
        self._closed = False  # by close(): probe() must not open it again (and take its LOCK)

    def _open(self) -> plyvel.DB:
        try:
            # A database is created only where there is none: in a directory whose CURRENT
            # file is gone (a bad restore, a stray rm), LevelDB would write a new, empty one
            # and delete the old tables as obsolete: a plain `metaopt status` wiped a replica.
            if _holds_data(self.path) and not (self.path / "CURRENT").exists():
                raise StoreError(
                    f"the store at {self.path} is damaged (its CURRENT file is missing);"
                    " restore it from a copy, or move it aside to start afresh"
                )
            if self.path.exists() and not self.path.is_dir():
                # mkdir said only "[Errno 17] File exists".
                raise StoreError(
                    f"{self.path} is a file, not a store directory; move it aside (the store"
                    " then starts afresh there), or use another directory"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            # LevelDB refuses a second open in this process by the LOCK file's name: one
            # directory spelt relative and absolute, through a symlink, or renamed while
            # open, was opened twice, both writing under one node's record numbers. So the
            # directories open in this process are known by device and inode as well.
            info = os.stat(self.path)
            held = (info.st_dev, info.st_ino)
            token = object()  # this open's: only it lets go of what it notes
            db: plyvel.DB | None = None
            try:  # (from the first step: a Ctrl-C anywhere lets go of what this open noted)
                with _HELD_LOCK:
                    owner = _HELD.setdefault(held, token)
                if owner is not token and owner is not self._token:  # (probe(): its own)
                    raise StoreLocked(
                        f"the store {self.path} is in use by another store of this process;"
                        " close that one first, or use another directory"
                    )
                # No block compression: records are mostly keys, ids and floats that snappy
                # barely shrinks (4% on event records), while decompressing a block on every
                # random read halved how fast a replica reads records out to a catching-up
                # peer. Tables written compressed by an older version stay readable. (The
                # path as bytes: a real path with a byte not UTF-8 was plyvel's ValueError.)
                db = plyvel.DB(os.fsencode(self.path), create_if_missing=True, compression=None)
                if owner is token:  # its first open, or probe()'s of a directory put in its place
                    # Dropped unclosed, the store lets go of its directory (its DB closes too).
                    let_go, self._token = self._let_go, token
                    self._let_go = weakref.finalize(self, _let_go, held, token)
                    if let_go is not None:
                        let_go()  # (the directory it held before)
            except BaseException:
                _let_go(held, token)
                if db is not None:
                    db.close()
                raise
            return db
        except plyvel.IOError as exc:
            # Only a lock held elsewhere: "IO error: lock .../LOCK: already held by process"
            # (or "Resource temporarily unavailable"). A read-only disk names the LOCK file too
            # ("IO error: .../LOCK: Read-only file system") and is not another process.
            why = str(exc).lower()
            if "already held" in why or "temporarily unavailable" in why:
                raise StoreLocked(
                    f"the store {self.path} is in use by another process;"
                    " stop it or use another directory"
                ) from None
            raise StoreError(f"cannot open the store at {self.path}: {_said(exc)}") from None
        except plyvel.CorruptionError as exc:
            # CURRENT naming a missing manifest, tables gone, a manifest of garbage: said
            # with nothing to do about it.
            raise _unreadable(self.path, exc, "open") from None
        except plyvel.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {_said(exc)}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from None

    def _scan(self) -> tuple[VersionVector, SetFingerprint]:
        """The version vector and fingerprint of what the disk holds (one scan for both).

        The index lists each origin's records in seq order, so the vector is built a run of
        consecutive seqs at a time: noting each key in it one by one made the scan of a
        million records 1.47 s (0.63 s now), at every peer start and offline read.
        """
        vv = VersionVector()
        origin_end = 1 + ORIGIN_SIZE
        unpack, from_bytes = _U64.unpack_from, int.from_bytes
        total = count = 0
        origin, lo, hi = b"", 0, -1  # the run being read
        try:
            for raw in self._db.iterator(prefix=b"o", include_value=False):
                (seq,) = unpack(raw, origin_end)
                total += from_bytes(raw[-KEY_SIZE:], "little")
                count += 1
                if seq == hi + 1 and raw[1:origin_end] == origin:
                    hi = seq
                    continue
                vv.add_run(origin, lo, hi)  # (nothing for the empty run at the start)
                origin, lo, hi = raw[1:origin_end], seq, seq
            vv.add_run(origin, lo, hi)
        except plyvel.Error as exc:  # a table cut short or garbled on disk: unreadable
            self._db.close()
            raise _unreadable(self.path, exc) from None
        return vv, SetFingerprint.summed(total, count)

    def add(self, records: Iterable[Record]) -> list[Record]:
        """Add records in one atomic, synced write batch; return the new ones, in order.

        The records are already decoded and checked (Record.decode_many validates a whole
        message before any of it reaches here), so a batch is all or nothing: if writing any
        entry fails, nothing of the batch is stored and the summaries are untouched.
        """
        if self._failure is not None:
            self.probe()  # (raises while the disk still refuses)
        new: list[Record] = []
        seen: set[bytes] = set()
        with interrupts_held():  # (a Ctrl-C would leave the summaries behind the disk)
            try:
                self._write(self._db, records, new, seen, self._vv)
            except plyvel.Error as exc:
                self._unconfirmed = new
                self._fail(_write_failed(self.path, exc))
            # Only now, with the batch synced, do the in-memory summaries and listeners see it.
            if new:
                self._note(new, seen)
                notify(self._subscribers, new)
        return new

    def _write(
        self,
        db: plyvel.DB,
        records: Iterable[Record],
        new: list[Record],
        seen: set[bytes],
        vv: VersionVector,
    ) -> None:
        """Write the records not held yet in one synced batch, listing them in new."""
        pack = _U64.pack
        kinds = self._kind_prefixes
        run_origin = b""
        high = 0
        # transaction=True: if anything raises mid-batch, nothing of the batch is written.
        with db.write_batch(sync=True, transaction=True) as batch:
            put = batch.put
            for record in records:
                key = record.key
                if key in seen:
                    continue
                origin = record.origin
                seq = record.seq
                if origin != run_origin:
                    run_origin = origin
                    high = vv.high(origin)
                # A key names bytes that hold one (origin, seq), so a pair not yet held (above
                # the origin's high mark, or in a hole) proves the key new; the disk probe is
                # needed only for duplicates and equivocations.
                if seq <= high and vv.contains(origin, seq) and db.get(b"r" + key) is not None:
                    continue
                seen.add(key)
                where = origin + pack(seq)
                tk = pack(record.time) + key
                put(b"o" + where + key, record.data)
                put(b"r" + key, where)
                put(b"t" + tk, b"")
                for link in record.links:
                    put(b"l" + _LENGTH[len(link)] + link + tk, where)
                kind = kinds.get(record.kind)
                if kind is None:
                    kind = _prefixed(b"k", record.kind.encode())
                    if len(kinds) < _MAX_KIND_PREFIXES:  # peers choose kinds; keep memory bounded
                        kinds[record.kind] = kind
                put(kind + tk, where)
                new.append(record)

    def _fail(self, failure: StoreWriteFailed) -> NoReturn:
        """After a write the disk refused: refuse every write until probe() has closed and
        opened the database again and written to it. Reads go on meanwhile.

        LevelDB's log is damaged by a failed synced write: the writes after it succeeded, were
        acknowledged (and pushed to other peers), and were gone when the store was next opened,
        their (origin, seq) then handed out again for other records. Opened again first, it
        keeps everything acknowledged, its summaries rebuilt from what the disk holds. It is
        left open until then for reads (a closed one failed every status call with plyvel's
        RuntimeError): what it serves was written before the failure, since LevelDB applies a
        batch to its memory only once the log took it.
        """
        # A copy without the traceback raised below: kept, that traceback (its frames hold
        # the store's callers) tied a dropped Study and this store in a cycle, and the
        # LevelDB lock was held until the cycle collector ran.
        self._failure = StoreWriteFailed(str(failure), failure.disk)
        self._retry_at = time.monotonic() + _RETRY_AFTER
        try:
            raise failure
        finally:
            del failure  # (this frame, in the traceback, would hold it: another cycle)

    def probe(self) -> None:
        """Check that the store takes writes: after one failed, open it again (at most once a
        second) and write and delete a scratch entry, synced.

        Raises:
            StoreWriteFailed: the disk still refuses (or the store cannot be opened).
            StoreError: the store was closed.
        """
        if self._closed:
            # A probe racing a shutdown reopened the database and left it open, locked.
            raise StoreError(f"the store at {self.path} is closed")
        if self._failure is not None and time.monotonic() < self._retry_at:
            raise StoreWriteFailed(str(self._failure), self._failure.disk)
        try:
            if self._failure is not None or self._db.closed:  # (closed: a reopen that failed)
                self._check_room()
                with contextlib.suppress(plyvel.Error):
                    self._db.close()
                self._db = self._open()
                self._vv, self._fp = self._scan()
            self._db.put(_PROBE, b"", sync=True)
            self._db.delete(_PROBE, sync=True)
        except plyvel.Error as exc:
            self._fail(_write_failed(self.path, exc))
        except StoreError as exc:
            self._fail(StoreWriteFailed(str(exc), str(exc)))
        except OSError as exc:
            why = exc.strerror or str(exc)
            self._fail(StoreWriteFailed(f"cannot write to the store at {self.path}: {why}", why))
        with interrupts_held():  # (as in add: once cleared, the batch is never told again)
            self._failure = None
            # A batch whose write failed may be on disk all the same (its data written, its
            # sync refused): now in the summaries, its records are told to the listeners.
            landed = [r for r in self._unconfirmed if self._db.get(b"r" + r.key) is not None]
            self._unconfirmed = []
            if landed:
                notify(self._subscribers, landed)

    def _check_room(self) -> None:
        """Raise OSError unless the disk takes a synced file as large as the log that opening
        the store again turns into a table.

        Closed to be opened again on a disk still full, the store failed to open, and every
        read then raised (a reader of a store left open is served from what it held).
        """
        path = Path(self.path)
        size = max((f.stat().st_size for f in path.glob("*.log")), default=0) + (64 << 10)
        scratch = path / "~room"
        chunk = bytes(min(size, 1 << 20))
        try:
            with open(scratch, "wb") as out:
                for start in range(0, size, len(chunk)):
                    out.write(chunk[: size - start])
                out.flush()
                os.fsync(out.fileno())
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink()

    def _note(self, new: list[Record], keys: set[bytes]) -> None:
        # Catch-up delivers each origin's records as ascending runs: one SeqSet update per run.
        add_run = self._vv.add_run
        origin, lo, hi = new[0].origin, new[0].seq, new[0].seq
        for record in new[1:]:
            if record.seq == hi + 1 and record.origin == origin:
                hi += 1
            else:
                add_run(origin, lo, hi)
                origin, lo, hi = record.origin, record.seq, record.seq
        add_run(origin, lo, hi)
        self._fp.extend(keys)

    def _checked(self, key: bytes, data: bytes) -> bytes:
        """The bytes read under key, if they are its record's.

        LevelDB checks no block's checksum on a read (plyvel's default; told to, its
        iterators stopped short in silence), so a bit flipped on disk came back: as a msgpack
        traceback at peer start and in every read command, or as another record, which the
        other peers took for a new one and then asked for the old one at every session.
        """
        if key_of(data) != key:
            raise _unreadable(self.path, f"the record {key.hex()[:12]} is damaged")
        return data

    def raw_get(self, key: bytes) -> bytes | None:
        try:
            held: bytes | None = self._db.get(b"r" + key)
            if held is not None and len(held) == _WHERE:
                held = self._db.get(b"o" + held + key)
            # (Else the bytes themselves, in a store written before the o layout.)
        except plyvel.Error as exc:  # a block garbled on disk, where only this read goes
            raise _unreadable(self.path, exc) from None
        return None if held is None else self._checked(key, held)

    def get(self, key: bytes) -> Record | None:
        data = self.raw_get(key)
        return None if data is None else Record.load(key, data)

    def __contains__(self, key: object) -> bool:
        try:
            return isinstance(key, bytes) and self._db.get(b"r" + key) is not None
        except plyvel.Error as exc:
            raise _unreadable(self.path, exc) from None

    def __len__(self) -> int:
        return self._fp.count

    def version_vector(self) -> VersionVector:
        return self._vv

    def by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[Record]:
        for key, data in self.raw_by_origin(origin, lo, hi):
            yield Record.load(key, data)

    def raw_by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        start = b"o" + origin + _U64.pack(lo)
        stop = b"o" + origin + _U64.pack(hi + 1) if hi + 1 < 2**64 else b"o" + origin + b"\xff"
        data_of, checked = self.raw_get, self._checked
        try:
            for raw, data in self._db.iterator(start=start, stop=stop):
                key = raw[-KEY_SIZE:]
                if data:
                    yield key, checked(key, data)
                else:  # an entry of the older layout: the bytes are under r<key>
                    held = data_of(key)
                    if held is not None:
                        yield key, held
        except plyvel.Error as exc:
            raise _unreadable(self.path, exc) from None

    def _index_scan(self, prefix: bytes) -> Iterator[Record]:
        # The iterator (LevelDB's snapshot) is made now, not at the first next(): a scan is
        # of the set as it is at the call, as the in-memory store's.
        try:
            entries = self._db.iterator(prefix=prefix)
        except plyvel.Error as exc:
            raise _unreadable(self.path, exc) from None
        return self._records_at(entries)

    def _records_at(self, entries: Iterator[tuple[bytes, bytes]]) -> Iterator[Record]:
        get = self._db.get
        data_of, checked = self.raw_get, self._checked
        try:
            for raw, where in entries:
                key = raw[-KEY_SIZE:]
                if not where:  # an entry of the older layout (raw_get checks its bytes)
                    data = data_of(key)
                elif (data := get(b"o" + where + key)) is not None:
                    data = checked(key, data)
                if data is not None:
                    yield Record.load(key, data)
        except plyvel.Error as exc:  # a table garbled where only this scan reads
            raise _unreadable(self.path, exc) from None

    def linked(self, link: bytes) -> Iterator[Record]:
        return self._index_scan(_prefixed(b"l", link))

    def of_kind(self, kind: str) -> Iterator[Record]:
        return self._index_scan(_prefixed(b"k", kind.encode()))

    def ordered(self, lower: Bound | None = None, upper: Bound | None = None) -> Iterator[Bound]:
        start = b"t" if lower is None else b"t" + _U64.pack(lower[0]) + lower[1]
        stop = b"u" if upper is None else b"t" + _U64.pack(upper[0]) + upper[1]
        try:
            raws = self._db.iterator(start=start, stop=stop, include_value=False)  # (made now)
        except plyvel.Error as exc:
            raise _unreadable(self.path, exc) from None
        return self._bounds(raws)

    def _bounds(self, raws: Iterator[bytes]) -> Iterator[Bound]:
        try:
            for raw in raws:
                yield _U64.unpack_from(raw, 1)[0], raw[9:]
        except plyvel.Error as exc:  # a table garbled where only this scan reads
            raise _unreadable(self.path, exc) from None

    def fingerprint(self) -> SetFingerprint:
        return SetFingerprint(self._fp.total, self._fp.count)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def close(self) -> None:
        self._closed = True
        self._subscribers.clear()
        if not self._db.closed:
            self._db.close()
        if self._let_go is not None:
            self._let_go()

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
