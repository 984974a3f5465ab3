"""Store behaviour a mutation audit of crdt/_leveldb.py, _memory.py and _store.py found unpinned."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import plyvel
import pytest

import crdt
from crdt import (
    LevelDBStore,
    MemoryStore,
    Record,
    SetFingerprint,
    Store,
    StoreError,
    StoreLocked,
    StoreWriteFailed,
)
from tests.crdt import test_store_contract as contract
from tests.crdt.test_store_contract import (
    EXP1,
    A,
    B,
    StoreFactory,
    _write_first_layout,
    order,
    rec,
    sample,
)

make_store = contract.make_store  # the contract's fixture: each test runs on both backends


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


# --- both backends -------------------------------------------------------------------------


def test_subscribers_see_the_batch_already_in_len_vector_and_fingerprint(store: Store) -> None:
    """Pins that summaries are updated before subscribers hear: replication reads the version
    vector and fingerprint in its callback, and must not advertise a vector missing the batch."""
    records = sample()
    seen: list[tuple[int, bool, int]] = []

    def callback(batch: list[Record]) -> None:
        vv = store.version_vector()
        seen.append(
            (
                len(store),
                all(vv.contains(r.origin, r.seq) for r in batch),
                store.fingerprint().count,
            )
        )

    store.subscribe(callback)
    store.add(records[:3])
    store.add(records)
    assert seen == [(3, True, 3), (len(records), True, len(records))]


def test_unsubscribing_twice_is_harmless(store: Store) -> None:
    """Pins that the unsubscribe handle is idempotent: a caller closing twice (a replica closed
    on an error path and again at exit) must not raise ValueError."""
    heard: list[list[Record]] = []
    unsubscribe = store.subscribe(heard.append)
    unsubscribe()
    unsubscribe()
    store.add(sample()[:1])
    assert heard == []


def test_a_subscriber_unsubscribing_itself_does_not_silence_the_next(store: Store) -> None:
    """Pins that notify walks a copy of the subscribers: a one-shot callback removing itself
    mid-notification made the subscriber after it miss the batch (replication never pushed it)."""
    heard: list[str] = []
    unsubscribe = None

    def once(batch: list[Record]) -> None:
        heard.append("once")
        assert unsubscribe is not None
        unsubscribe()

    unsubscribe = store.subscribe(once)
    store.subscribe(lambda batch: heard.append("always"))
    store.add(sample()[:1])
    store.add(sample()[1:2])
    assert heard == ["once", "always", "always"]


def test_fingerprint_is_a_copy(store: Store) -> None:
    """Pins that fingerprint() returns a copy (as documented): a range session extending the
    digest it was given must not change the store's own."""
    records = sample()
    store.add(records[:3])
    fp = store.fingerprint()
    fp.add(records[5].key)
    fp.extend([records[6].key])
    again = store.fingerprint()
    expected = SetFingerprint.of(r.key for r in records[:3])
    assert (again.total, again.count) == (expected.total, expected.count)


def test_ordered_is_a_snapshot_of_the_set_at_the_call(store: Store) -> None:
    """Pins that an ordered() listing is not changed by records added after the call, read or
    not yet (a range session interleaved with arriving pushes must not see an item twice or
    skip one), the same on both backends."""
    records = sample()
    store.add(records)
    bounds = [(r.time, r.key) for r in order(records)]
    unread = store.ordered()
    listing = store.ordered()
    assert next(listing) == bounds[0]
    store.add([rec(A, 50, 1), rec(B, 50, 2)])  # earlier than everything listed
    list(store.ordered())  # another reader meanwhile
    assert list(listing) == bounds[1:]
    assert list(unread) == bounds


@pytest.mark.parametrize("index", ["linked", "of_kind"])
def test_an_index_scan_under_way_is_a_snapshot(store: Store, index: str) -> None:
    """Pins that linked()/of_kind() do not yield records added after the call, read or not yet:
    a fold over an experiment that also applies the records its subscriber hears would count
    them twice."""
    records = sample()
    store.add(records)
    arg: object = EXP1 if index == "linked" else "trial"
    scan = getattr(store, index)
    expect = list(scan(arg))
    unread = scan(arg)
    listing = scan(arg)
    assert next(listing) == expect[0]
    store.add([rec(A, 60, 10**6, "trial", (EXP1,)), rec(A, 61, 1, "trial", (EXP1,))])
    list(scan(arg))  # another reader meanwhile
    assert list(listing) == expect[1:]
    assert list(unread) == expect  # made before the add, read after it


def test_by_origin_on_a_sparse_origin_includes_both_ends_in_seq_order(store: Store) -> None:
    """Pins by_origin's inclusive bounds and seq order when the asked range is wider than what
    is held (the in-memory store then walks what it holds, not the range)."""
    wide = [rec(A, 100, 1), rec(A, 7, 2), rec(A, 1, 3), rec(A, 50, 4)]
    store.add(wide)
    assert [r.seq for r in store.by_origin(A, 1, 100)] == [1, 7, 50, 100]
    assert [r.seq for r in store.by_origin(A, 7, 100)] == [7, 50, 100]
    assert [r.seq for r in store.by_origin(A, 2, 99)] == [7, 50]
    assert [k for k, _ in store.raw_by_origin(A, 1, 10**6)] == [
        r.key for r in sorted(wide, key=lambda r: r.seq)
    ]


# --- LevelDB -------------------------------------------------------------------------------


def test_reopen_keeps_an_origins_run_apart_from_the_next_origins_seqs(tmp_path: Path) -> None:
    """Pins the opening scan's origin check: origin B's seqs 3, 4 right after origin A's 1, 2
    are B's, not A's run continued (else A claims seqs it never wrote and B vanishes)."""
    records = [rec(A, 1, 1), rec(A, 2, 2), rec(B, 3, 3), rec(B, 4, 4)]
    with LevelDBStore(tmp_path / "db") as store:
        store.add(records)
        live = store.version_vector()
        assert live.get(A).runs() == [(1, 2)]
    with LevelDBStore(tmp_path / "db") as store:
        vv = store.version_vector()
        assert vv == live
        assert vv.get(A).runs() == [(1, 2)] and vv.get(B).runs() == [(3, 4)]


def test_a_directory_with_old_sst_tables_and_no_current_is_refused(tmp_path: Path) -> None:
    """Pins .sst as table files too (older LevelDB's name): such a directory without CURRENT is
    refused and left as it is, not replaced by an empty store deleting the tables as obsolete."""
    path = tmp_path / "replica"
    path.mkdir()
    (path / "000005.sst").write_bytes(b"\x01" * 4096)
    (path / "MANIFEST-000004").write_bytes(b"\x02" * 64)
    before = sorted((p.name, p.read_bytes()) for p in path.iterdir())
    with pytest.raises(StoreError, match="CURRENT file is missing"):
        LevelDBStore(path)
    assert sorted((p.name, p.read_bytes()) for p in path.iterdir()) == before


def test_a_store_path_under_a_file_is_a_store_error(tmp_path: Path) -> None:
    """Pins that an OSError while creating the directory comes out as StoreError (the CLI says
    StoreErrors in one line; a bare NotADirectoryError was a traceback)."""
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StoreError) as info:
        LevelDBStore(tmp_path / "plain" / "db")
    assert str(info.value).startswith(f"cannot open the store at {tmp_path / 'plain' / 'db'}: ")


def test_an_unreadable_store_is_not_left_locked(tmp_path: Path) -> None:
    """Pins that the opening scan closes the database when it fails: while the caller still
    holds the first error, a second open must say "unreadable" again, not "in use by another
    process" (the operator went looking for a process that does not exist)."""
    path = tmp_path / "replica"
    with LevelDBStore(path) as store:
        body = {"pad": "x" * 400}
        store.add([Record.create("event", b"o" * 16, s, s, body) for s in range(1, 3000)])
    LevelDBStore(path).close()  # its log written out as a table
    table = next(f for f in path.iterdir() if f.suffix == ".ldb")
    with open(table, "r+b") as f:
        f.truncate(table.stat().st_size // 2)
    with pytest.raises(StoreError) as first:
        LevelDBStore(path)
    with pytest.raises(StoreError) as second:
        LevelDBStore(path)
    assert first.value is not None  # (still held while opening again)
    assert not isinstance(second.value, StoreLocked)
    assert "restore it from a copy" in str(second.value)


def test_kind_prefix_cache_is_bounded(tmp_path: Path) -> None:
    """Pins the 256-entry bound on cached kind prefixes: peers choose kinds, so an unbounded
    cache lets a peer grow another's memory one record at a time. Uncached kinds still work."""
    records = [rec(A, s, s, f"kind{s}") for s in range(1, 301)]
    with LevelDBStore(tmp_path / "db") as store:
        store.add(records)
        assert len(store._kind_prefixes) <= 256
        assert list(store.of_kind("kind300")) == [records[-1]]
        assert list(store.of_kind("kind1")) == [records[0]]


class _SpyDB:
    """A plyvel DB that notes the options of every write batch."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db = db
        self.batches: list[dict[str, object]] = []

    def write_batch(self, **options: object) -> object:
        self.batches.append(options)
        return self.db.write_batch(**options)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_every_add_is_one_synced_transactional_batch(tmp_path: Path) -> None:
    """Pins sync=True (durable before add returns, and so before any peer hears of the
    records: power loss must not lose what was advertised) and transaction=True."""
    with LevelDBStore(tmp_path / "db") as store:
        spy = _SpyDB(store._db)
        store._db = spy
        try:
            store.add(sample()[:3])
            store.add(sample())
        finally:
            store._db = spy.db
    assert spy.batches == [{"sync": True, "transaction": True}] * 2


def _refuse_writes(store: LevelDBStore, monkeypatch: pytest.MonkeyPatch, reason: bytes) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise plyvel.IOError(reason)

    monkeypatch.setattr(store, "_write", refused)


def test_the_disk_reason_is_the_last_part_of_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins StoreWriteFailed.disk as the system's word alone: the peer logs it once a minute as
    the reason ("cannot write the replica (No space left on device, ...)")."""
    with LevelDBStore(tmp_path / "db") as store:
        _refuse_writes(store, monkeypatch, b"IO error: /d/000003.log: No space left on device")
        with pytest.raises(StoreWriteFailed) as info:
            store.add(sample()[:1])
    assert info.value.disk == "No space left on device"
    assert "000003.log" in str(info.value)


def test_after_a_failed_write_the_disk_is_tried_again_at_most_once_a_retry_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the retry pacing: right after a refused write, adds are refused without reopening
    the store (each reopen writes a table: a full disk was hammered every call), and taken
    once the retry period has passed."""
    now = [100.0]
    monkeypatch.setattr("crdt._leveldb.time", SimpleNamespace(monotonic=lambda: now[0]))
    records = sample()
    with LevelDBStore(tmp_path / "db") as store:
        with monkeypatch.context() as refusing:
            _refuse_writes(store, refusing, b"IO error: x: No space left on device")
            with pytest.raises(StoreWriteFailed):
                store.add(records[:1])
        db = store._db
        now[0] += 0.5
        with pytest.raises(StoreWriteFailed) as info:
            store.add(records[:1])  # the disk would take it, but it is not tried yet
        assert info.value.disk == "No space left on device"
        assert store._db is db and records[0].key not in store
        now[0] += 0.6
        assert store.add(records[:1]) == records[:1]
        assert store._db is not db  # opened again first


def test_a_probe_that_cannot_reopen_the_store_says_write_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins that probe() raises StoreWriteFailed (what the peer's storage trouble handles) when
    reopening fails with a StoreError: anything else escaped the peer's probe loop."""
    monkeypatch.setattr("crdt._leveldb._RETRY_AFTER", 0.0)
    with LevelDBStore(tmp_path / "db") as store:
        with monkeypatch.context() as refusing:
            _refuse_writes(store, refusing, b"IO error: x: Read-only file system")
            with pytest.raises(StoreWriteFailed):
                store.add(sample()[:1])

        def cannot_open() -> plyvel.DB:
            raise StoreError(f"cannot open the store at {store.path}: IO error: gone")

        with monkeypatch.context() as broken:
            broken.setattr(store, "_open", cannot_open)
            with pytest.raises(StoreWriteFailed) as info:
                store.probe()
        assert "IO error: gone" in info.value.disk
        store.probe()  # and once it opens again, writes go on
        assert store.add(sample()[:1]) == sample()[:1]


def test_a_probe_after_close_refuses_rather_than_opens_the_store_again(tmp_path: Path) -> None:
    """A probe racing a peer's shutdown opened the closed database again and left it open,
    its LOCK held: the next start on that data directory found the replica in use."""
    store = LevelDBStore(tmp_path / "db")
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.probe()
    with LevelDBStore(tmp_path / "db") as again:  # not locked by the closed one
        assert len(again) == 0


def test_a_failed_write_that_never_reached_the_disk_is_not_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the on-disk check after a probe: records of a refused batch that are not on disk are
    not told to subscribers (replication would push records this replica does not hold)."""
    monkeypatch.setattr("crdt._leveldb._RETRY_AFTER", 0.0)
    records = sample()[:3]
    heard: list[list[Record]] = []
    with LevelDBStore(tmp_path / "db") as store:
        store.subscribe(heard.append)

        def refused_midway(db: object, batch: object, new: list[Record], *rest: object) -> None:
            new.extend(records)  # listed as new, then the write fails: nothing is stored
            raise plyvel.IOError(b"IO error: x: No space left on device")

        with monkeypatch.context() as refusing:
            refusing.setattr(store, "_write", refused_midway)
            with pytest.raises(StoreWriteFailed):
                store.add(records)
        store.probe()
        assert heard == [] and len(store) == 0
        assert all(r.key not in store for r in records)


def test_a_dangling_first_layout_entry_is_skipped_by_raw_by_origin(tmp_path: Path) -> None:
    """Pins the first layout's missing-bytes guard: an o entry whose r entry is gone yields
    nothing rather than (key, None), which failed a catching-up peer's whole reply."""
    records = [rec(A, 1, 1), rec(A, 2, 2), rec(A, 3, 3)]
    _write_first_layout(tmp_path / "db", records)
    db = plyvel.DB(str(tmp_path / "db"))
    db.delete(b"r" + records[1].key, sync=True)
    db.close()
    with LevelDBStore(tmp_path / "db") as store:
        assert list(store.raw_by_origin(A, 1, 3)) == [
            (records[0].key, records[0].data),
            (records[2].key, records[2].data),
        ]
        assert [r.seq for r in store.by_origin(A, 1, 3)] == [1, 3]


# --- MemoryStore ---------------------------------------------------------------------------


def test_a_closed_memory_store_tells_no_subscriber() -> None:
    """Pins that close() drops the subscribers: a replica closed (a Study ended) must not be
    called back by a store someone still writes to."""
    store = MemoryStore()
    heard: list[list[Record]] = []
    store.subscribe(heard.append)
    store.close()
    store.add(sample()[:2])
    assert heard == []


# --- SetFingerprint and the public surface -------------------------------------------------


def test_fingerprint_digest_tells_count_apart_when_sums_collide() -> None:
    """Pins the count in the digest: keys k and 2^256 - k sum to 0, so {k, -k} and {} have one
    total; without the count their digests were equal and reconciliation saw equal ranges."""
    k = int.from_bytes(b"\x05" * 32, "little")
    pair = [k.to_bytes(32, "little"), ((1 << 256) - k).to_bytes(32, "little")]
    fp = SetFingerprint.of(pair)
    assert fp.total == 0 and fp.count == 2
    assert fp.digest() != SetFingerprint.of([]).digest()


def test_fingerprint_digest_is_stable_across_versions() -> None:
    """Pins the digest's exact bytes (BLAKE2b-128 of the little-endian sum and count): peers of
    different versions compare range digests, and any change makes every range differ."""
    keys = [bytes([i]) * 32 for i in range(1, 4)]
    assert SetFingerprint.of(keys).digest().hex() == "25c65e6b789de03de8db9ac7cc74a2f8"
    wrapping = [b"\xf0" * 32, b"\x81" * 32, b"\x7f" * 32]  # their sum passes 2^256
    assert SetFingerprint.of(wrapping).digest().hex() == "441ce0dde62b855e39665749da409f65"
    assert SetFingerprint.of([]).digest().hex() == "673cbd9a83cb676eba3e0bcd63a2b414"


def test_the_store_port_is_public() -> None:
    """Pins the storage names of crdt's public surface (metaopt and users import them by name,
    and `from crdt import *` must bring them)."""
    names = {
        "Bound", "LevelDBStore", "MemoryStore", "SetFingerprint", "Store", "StoreError",
        "StoreLocked", "StoreWriteFailed", "Subscriber", "VersionVector", "Record",
    }  # fmt: skip
    assert names <= set(crdt.__all__)
    assert all(getattr(crdt, name) is not None for name in crdt.__all__)
    assert issubclass(StoreWriteFailed, StoreError) and issubclass(StoreLocked, StoreError)
