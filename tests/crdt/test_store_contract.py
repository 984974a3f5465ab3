"""One contract suite for the Store port, run against MemoryStore and LevelDBStore."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import plyvel
import pytest

from crdt import (
    LevelDBStore,
    MemoryStore,
    Record,
    RecordError,
    SetFingerprint,
    Store,
    StoreError,
    StoreLocked,
    StoreWriteFailed,
    VersionVector,
)

A = b"A" * 16
B = b"B" * 16
EXP1 = b"\x01" * 32
EXP2 = b"\x02" * 32


def rec(
    origin: bytes,
    seq: int,
    time: int,
    kind: str = "trial",
    links: tuple[bytes, ...] = (),
    **body: object,
) -> Record:
    return Record.create(kind, origin, seq, time, {"n": seq, **body}, links)


def sample() -> list[Record]:
    """Records of two origins, two experiments and three kinds, added out of time order."""
    out = [
        rec(A, 1, 500, "experiment"),
        rec(A, 2, 100, "trial", (EXP1,)),
        rec(B, 1, 300, "trial", (EXP2,)),
        rec(A, 3, 300, "event", (EXP1, b"t1")),
        rec(B, 2, 50, "event", (EXP2, b"t2")),
        rec(A, 5, 700, "trial", (EXP1,)),
        rec(B, 3, 300, "trial", (EXP1,)),
    ]
    return out


def order(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.time, r.key))


StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "leveldb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    def make() -> Store:
        store: Store = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


def test_add_get_contains_len(store: Store) -> None:
    records = sample()
    assert store.add(records) == records
    assert len(store) == len(records)
    for r in records:
        assert r.key in store
        got = store.get(r.key)
        assert got is not None and got.data == r.data and got.body == r.body
        assert (got.kind, got.origin, got.seq, got.time, got.links) == (
            r.kind,
            r.origin,
            r.seq,
            r.time,
            r.links,
        )
    missing = rec(A, 99, 1).key
    assert missing not in store and store.get(missing) is None
    assert "not bytes" not in store


def test_idempotent_add_and_batch_duplicates(store: Store) -> None:
    records = sample()
    assert store.add(records[:3]) == records[:3]
    again = store.add([records[1], records[3], records[3], records[0], records[4]])
    assert again == [records[3], records[4]]
    assert store.add(records[:5]) == []
    assert len(store) == 5


def test_stores_exact_bytes(store: Store) -> None:
    r = Record.decode(rec(A, 1, 1, x=[1.5, "s", b"b"]).data)
    store.add([r])
    got = store.get(r.key)
    assert got is not None and got.data == r.data and got.key == r.key


def test_linked_and_of_kind_order_and_isolation(store: Store) -> None:
    records = sample()
    store.add(records)
    for link in (EXP1, EXP2, b"t1", b"t2"):
        assert list(store.linked(link)) == order([r for r in records if link in r.links])
    assert list(store.linked(b"\x01" * 31)) == []  # a prefix of a link is another link
    assert list(store.linked(EXP1 + b"\x00")) == []
    for kind in ("experiment", "trial", "event", "nope"):
        assert list(store.of_kind(kind)) == order([r for r in records if r.kind == kind])
    assert list(store.of_kind("tria")) == []


def test_ordered_bounds(store: Store) -> None:
    records = sample()
    store.add(records)
    bounds = [(r.time, r.key) for r in order(records)]
    assert list(store.ordered()) == bounds
    n = len(bounds)
    for i in range(n + 1):
        for j in range(i, n + 1):
            # index n stands for an open end (None) on either side
            lower = bounds[i] if i < n else None
            upper = bounds[j] if j < n else None
            expect = bounds[i:j] if lower is not None else bounds[:j]
            assert list(store.ordered(lower, upper)) == expect
            assert list(store.ordered(None, upper)) == bounds[:j]
    assert list(store.ordered(bounds[-1], bounds[0])) == []
    assert list(store.ordered(None, (300, b""))) == [b for b in bounds if b[0] < 300]
    assert list(store.ordered((300, b""), (301, b""))) == [b for b in bounds if b[0] == 300]


def test_fingerprint_version_vector_by_origin(store: Store) -> None:
    records = sample()
    assert store.fingerprint().digest() == SetFingerprint.of([]).digest()
    store.add(records[:4])
    store.add(records)
    expected = SetFingerprint.of(r.key for r in records)
    fp = store.fingerprint()
    assert (fp.total, fp.count) == (expected.total, expected.count)
    vv = VersionVector()
    for r in records:
        vv.add(r.origin, r.seq)
    assert store.version_vector() == vv
    assert store.version_vector().get(A).runs() == [(1, 3), (5, 5)]
    assert [r.seq for r in store.by_origin(A, 1, 10)] == [1, 2, 3, 5]
    assert [r.seq for r in store.by_origin(A, 2, 3)] == [2, 3]
    assert [r.seq for r in store.by_origin(B, 2, 2)] == [2]
    assert list(store.by_origin(B, 4, 100)) == []
    assert list(store.by_origin(b"C" * 16, 1, 2**63 - 1)) == []


def test_the_version_vector_digest_follows_every_add(store: Store) -> None:
    # The stores update their live vector through add_run only; a digest cached before an
    # add and kept after it told peers "mine is this" about a vector the replica had outgrown.
    records = sample()
    store.add(records[:2])
    before = store.version_vector().digest()
    store.add(records[2:])
    vv = store.version_vector()
    assert vv.digest() != before
    assert vv.digest() == VersionVector.from_wire(vv.to_wire()).digest()


def test_subscribers_hear_only_new_records_after_add(store: Store) -> None:
    records = sample()
    heard: list[list[Record]] = []

    def callback(batch: list[Record]) -> None:
        assert all(r.key in store for r in batch)  # already added when announced
        heard.append(batch)

    unsubscribe = store.subscribe(callback)
    store.add(records[:3])
    store.add(records[:3])
    store.add([records[2], records[3], records[3]])
    assert heard == [records[:3], [records[3]]]
    unsubscribe()
    store.add(records[4:])
    assert len(heard) == 2


def test_a_failing_subscriber_neither_fails_add_nor_silences_the_others(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    records = sample()
    heard: list[list[Record]] = []

    def broken(batch: list[Record]) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(broken)
    store.subscribe(heard.append)
    with caplog.at_level("ERROR", logger="crdt"):
        assert store.add(records[:2]) == records[:2]
    assert heard == [records[:2]]
    assert "subscriber failed" in caplog.text


def _interrupted_add(store: Store, records: list[Record]) -> None:
    """store.add(records), a Ctrl-C landing on it (a KeyboardInterrupt is expected)."""
    with pytest.raises(KeyboardInterrupt):
        store.add(records)


def _consistent(store: Store, held: list[Record]) -> None:
    """The store's summaries agree with what it holds."""
    vv = VersionVector()
    for r in held:
        vv.add(r.origin, r.seq)
    assert store.version_vector() == vv
    expected = SetFingerprint.of(r.key for r in held)
    assert (store.fingerprint().total, store.fingerprint().count) == (
        expected.total,
        expected.count,
    )
    assert len(store) == len(held) and all(r.key in store for r in held)


def test_a_ctrl_c_while_subscribers_hear_of_a_batch_reaches_every_one_first(store: Store) -> None:
    # A notebook's "interrupt kernel" during a Study's tell(): a subscriber it interrupted, or
    # one after it, that never heard of a batch kept its views behind the store for good.
    records = sample()
    heard: list[list[Record]] = []

    def interrupted(batch: list[Record]) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # (its handler runs at the next bytecode)
        heard.append(batch)

    unsubscribe = store.subscribe(interrupted)
    store.subscribe(heard.append)
    _interrupted_add(store, records[:3])
    assert heard == [records[:3], records[:3]]
    _consistent(store, records[:3])
    unsubscribe()
    assert store.add(records[3:]) == records[3:]  # and the store goes on
    assert heard[2:] == [records[3:]]
    _consistent(store, records)


def test_a_ctrl_c_between_a_batch_written_and_its_summaries_leaves_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind its disk, the version vector let the node's next record take a seq already used
    # (an equivocation the other peers refuse), and the fingerprint never matched a peer's.
    records = sample()
    with LevelDBStore(tmp_path / "db") as store:
        heard: list[list[Record]] = []
        store.subscribe(heard.append)
        add_run = VersionVector.add_run  # (the first summary updated after the synced write)

        armed = [True]

        def interrupted(vv: VersionVector, origin: bytes, lo: int, hi: int) -> None:
            if armed:  # (one Ctrl-C: a second lets both through at once)
                armed.clear()
                os.kill(os.getpid(), signal.SIGINT)
            add_run(vv, origin, lo, hi)

        monkeypatch.setattr(VersionVector, "add_run", interrupted)
        _interrupted_add(store, records[:3])
        monkeypatch.undo()
        _consistent(store, records[:3])
        assert heard == [records[:3]]


def test_a_ctrl_c_held_while_the_disk_refuses_a_write_is_raised_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LevelDBStore(tmp_path / "db") as store:

        def interrupted_then_refused(*args: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            raise plyvel.IOError(b"IO error: sync refused")

        monkeypatch.setattr(store, "_write", interrupted_then_refused)
        with pytest.raises(KeyboardInterrupt) as raised:
            store.add(sample()[:1])
        assert isinstance(raised.value.__context__, StoreWriteFailed)  # (and said why)


def test_never_shrinks(store: Store) -> None:
    records = sample()
    sizes = []
    for r in records + records[::-1]:
        store.add([r])
        sizes.append(len(store))
    assert sizes == sorted(sizes) and sizes[-1] == len(records)
    assert all(r.key in store for r in records)


def test_leveldb_reopen_keeps_everything(tmp_path: Path) -> None:
    records = sample()
    with LevelDBStore(tmp_path / "db") as store:
        store.add(records[:4])
        store.add(records)
        fp, vv = store.fingerprint(), store.version_vector()
        listing = list(store.ordered())
    with LevelDBStore(tmp_path / "db") as store:
        assert len(store) == len(records)
        assert (store.fingerprint().total, store.fingerprint().count) == (fp.total, fp.count)
        assert store.version_vector() == vv
        assert list(store.ordered()) == listing
        assert list(store.linked(EXP1)) == order([r for r in records if EXP1 in r.links])
        assert store.add(records) == []


def test_leveldb_reopen_rebuilds_each_origins_runs_and_holes(tmp_path: Path) -> None:
    # The opening scan builds the vector a run of consecutive seqs at a time.
    rng = random.Random(7)
    origins = [bytes([i]) * 16 for i in range(5)]
    records = [rec(o, seq, seq) for o in origins for seq in range(1, 200) if rng.random() < 0.8]
    rng.shuffle(records)
    with LevelDBStore(tmp_path / "db") as store:
        store.add(records)
        vv, fp = store.version_vector(), store.fingerprint()
    with LevelDBStore(tmp_path / "db") as store:
        assert store.version_vector() == vv and len(store.version_vector()) == 5
        assert (store.fingerprint().total, store.fingerprint().count) == (fp.total, fp.count)
    with LevelDBStore(tmp_path / "empty") as store:
        pass
    with LevelDBStore(tmp_path / "empty") as store:
        assert len(store.version_vector()) == 0 and store.fingerprint().count == 0


def test_leveldb_second_open_is_locked(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db"), pytest.raises(StoreLocked) as info:
        LevelDBStore(tmp_path / "db")
    message = str(info.value)
    assert "\n" not in message and "in use" in message


def test_leveldb_second_open_by_another_spelling_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative and absolute, or through a symlink: LevelDB's lock within a process is by the
    # file's name, and the one directory was opened twice (a review of Study's path=).
    (tmp_path / "link").symlink_to(tmp_path / "db", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    with LevelDBStore(tmp_path / "db"):
        for other in ("db", tmp_path / "link", "link/"):
            with pytest.raises(StoreLocked):
                LevelDBStore(other)


def test_a_read_only_leveldb_directory_is_not_said_to_be_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # plyvel names the LOCK file in this error too; the operator went looking for a process.
    import plyvel

    def read_only(path: bytes, **kw: object) -> None:  # (the store passes its path as bytes)
        raise plyvel.IOError(b"IO error: " + path + b"/LOCK: Read-only file system")

    monkeypatch.setattr(plyvel, "DB", read_only)
    with pytest.raises(StoreError) as info:
        LevelDBStore(tmp_path / "db")
    assert not isinstance(info.value, StoreLocked)
    assert "Read-only file system" in str(info.value) and "in use" not in str(info.value)
    assert "b'" not in str(info.value)  # (plyvel's bytes, as text)


def test_a_table_garbled_where_only_a_scan_reads_is_one_readable_error(tmp_path: Path) -> None:
    # A peer loading its replica met it mid-load: the error came up as plyvel's, bytes and all
    # (b'Corruption: bad block type'), and with no advice.
    store = LevelDBStore(tmp_path / "db")
    store.add(sample())

    class Garbled:
        closed = False

        def iterator(self, **kw: object) -> object:
            raise plyvel.CorruptionError(b"Corruption: bad block type")

        get = iterator

        def close(self) -> None:
            pass

    real, store._db = store._db, Garbled()  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError) as info:
            list(store.linked(EXP1))
    finally:
        store._db = real
        store.close()
    said = str(info.value)
    assert said.startswith(f"cannot read the store at {tmp_path / 'db'}: Corruption: bad block")
    assert "b'" not in said and "restore it from a copy" in said


def test_leveldb_durable_before_advertised(tmp_path: Path) -> None:
    """At callback time a fresh open of a copy of the files on disk has them (dir is locked)."""
    records = sample()
    seen_on_disk: list[int] = []

    def callback(batch: list[Record]) -> None:
        copy = tmp_path / f"copy{len(seen_on_disk)}"
        shutil.copytree(tmp_path / "db", copy)
        (copy / "LOCK").unlink(missing_ok=True)
        with LevelDBStore(copy) as fresh:
            assert all(r.key in fresh for r in batch)
            seen_on_disk.append(len(fresh))

    with LevelDBStore(tmp_path / "db") as store:
        store.subscribe(callback)
        store.add(records[:3])
        store.add(records[3:])
    assert seen_on_disk == [3, len(records)]


def test_leveldb_long_unicode_kind_is_refused_or_stored(tmp_path: Path) -> None:
    data = msgpack.packb([1, "\U0001f600" * 64, A, 2, 2, [], {}], use_bin_type=True)
    try:
        wide = Record.decode(data)
    except RecordError:
        return  # refused at the door: it can never reach a store
    with LevelDBStore(tmp_path / "db") as store:
        assert store.add([wide]) == [wide]
        assert list(store.of_kind(wide.kind)) == [wide]


def test_leveldb_failed_batch_writes_nothing(tmp_path: Path) -> None:
    good = rec(A, 1, 1)
    base = rec(A, 2, 2)
    # Built directly (bypassing create's checks) to make the index write fail mid-batch.
    broken = Record(base.key, base.data, "x" * 300, A, 2, 2, (), {})
    with LevelDBStore(tmp_path / "db") as store:
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is written
            store.add([good, broken])
        assert (len(store), good.key in store, broken.key in store) == (0, False, False)
    with LevelDBStore(tmp_path / "db") as store:
        assert (len(store), good.key in store, broken.key in store) == (0, False, False)


def test_a_failed_write_that_reached_the_disk_is_told_once_the_probe_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch whose data was written but whose sync was refused is on disk all the same. The
    # probe that reopens the store finds it; unless it then tells the subscribers, replication
    # never pushes those records and the replica's folds never see them.
    records = sample()[:3]
    heard: list[list[Record]] = []
    monkeypatch.setattr("crdt._leveldb._RETRY_AFTER", 0.0)  # a probe may follow at once
    with LevelDBStore(tmp_path / "db") as store:
        store.subscribe(heard.append)
        write = store._write

        def written_then_refused(*args: object, **kwargs: object) -> None:
            write(*args, **kwargs)  # type: ignore[arg-type]
            raise plyvel.IOError(b"IO error: sync refused")

        monkeypatch.setattr(store, "_write", written_then_refused)
        with pytest.raises(StoreWriteFailed):
            store.add(records)
        assert heard == []  # not yet: the write said it failed
        monkeypatch.undo()
        store.probe()
        assert heard == [records]
        assert all(r.key in store for r in records)
        store.probe()  # told once only
        assert heard == [records]


def test_raw_by_origin_is_by_origin_without_rebuilding(store: Store) -> None:
    records = sample()
    store.add(records)
    for origin, lo, hi in [(A, 1, 10), (A, 2, 3), (B, 2, 2), (B, 4, 100), (b"C" * 16, 1, 9)]:
        expect = [(r.key, r.data) for r in store.by_origin(origin, lo, hi)]
        assert list(store.raw_by_origin(origin, lo, hi)) == expect
    assert [d for _, d in store.raw_by_origin(A, 1, 2**64 - 1)] == [
        r.data for r in sorted((r for r in records if r.origin == A), key=lambda r: r.seq)
    ]


def test_raw_get_is_get_without_rebuilding(store: Store) -> None:
    records = sample()
    store.add(records)
    for r in records:
        assert store.raw_get(r.key) == r.data
    assert store.raw_get(b"\x00" * 32) is None


def test_equivocating_records_are_both_kept_and_duplicates_dropped(store: Store) -> None:
    """Two records with one (origin, seq): the second is new although its pair is held."""
    first = rec(A, 1, 10)
    twin = rec(A, 1, 10, other=True)
    assert first.key != twin.key
    assert store.add([first]) == [first]
    assert store.add([twin, first]) == [twin]
    assert store.add([twin, first, twin]) == []
    assert (len(store), first.key in store, twin.key in store) == (2, True, True)
    assert {k for k, _ in store.raw_by_origin(A, 1, 1)} == {first.key, twin.key}
    fresh = rec(A, 2, 20)
    assert store.add([fresh, fresh, rec(A, 3, 30, x=1), rec(A, 3, 30, x=2)])[:1] == [fresh]
    assert len(store) == 5


def _write_first_layout(path: Path, records: list[Record]) -> None:
    """Entries as LevelDBStore wrote them before the bytes moved into the o entries."""
    u64 = struct.Struct(">Q").pack
    db = plyvel.DB(str(path), create_if_missing=True, compression=None)
    with db.write_batch(sync=True) as batch:
        for r in records:
            tk = u64(r.time) + r.key
            batch.put(b"r" + r.key, r.data)
            batch.put(b"o" + r.origin + u64(r.seq) + r.key, b"")
            batch.put(b"t" + tk, b"")
            for link in r.links:
                batch.put(b"l" + bytes([len(link)]) + link + tk, b"")
            batch.put(b"k" + bytes([len(r.kind.encode())]) + r.kind.encode() + tk, b"")
    db.close()


def test_leveldb_reads_a_store_of_the_first_layout(tmp_path: Path) -> None:
    """A replica written before the layout change opens as it is and takes new records beside."""
    records = sample()
    old, later = records[:4], records[4:]
    _write_first_layout(tmp_path / "db", old)
    for reopen in range(2):
        with LevelDBStore(tmp_path / "db") as store:
            held = old if reopen == 0 else records
            assert len(store) == len(held)
            assert store.add(old) == []  # known by key in the old layout too
            if reopen == 0:
                assert store.add(later) == later
                held = records
            for r in held:
                got = store.get(r.key)
                assert got is not None and (got.data, got.body) == (r.data, r.body)
                assert store.raw_get(r.key) == r.data
                assert r.key in store
            expected = SetFingerprint.of(r.key for r in held)
            assert (store.fingerprint().total, store.fingerprint().count) == (
                expected.total,
                expected.count,
            )
            vv = VersionVector()
            for r in held:
                vv.add(r.origin, r.seq)
            assert store.version_vector() == vv
            assert list(store.ordered()) == [(r.time, r.key) for r in order(held)]
            for link in (EXP1, EXP2, b"t1", b"t2"):
                assert list(store.linked(link)) == order([r for r in held if link in r.links])
            for kind in ("experiment", "trial", "event"):
                assert list(store.of_kind(kind)) == order([r for r in held if r.kind == kind])
            for origin in (A, B):
                mine = sorted((r for r in held if r.origin == origin), key=lambda r: r.seq)
                assert [r.data for r in store.by_origin(origin, 1, 99)] == [r.data for r in mine]
                assert list(store.raw_by_origin(origin, 1, 99)) == [(r.key, r.data) for r in mine]
