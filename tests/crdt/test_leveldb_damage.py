"""A damaged LevelDB directory is refused, never replaced by an empty database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import plyvel
import pytest

from crdt import LevelDBStore, Record, StoreError


def test_a_store_without_its_current_file_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    # LevelDB, told to create a missing database, wrote a new one there and deleted the old
    # tables as obsolete: a read-only `metaopt status` emptied a replica for good.
    path = tmp_path / "replica"
    store = LevelDBStore(path)
    store.add([Record.create("event", b"o" * 16, seq, seq, {"i": seq}) for seq in range(1, 200)])
    store.close()
    (path / "CURRENT").unlink()
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(StoreError, match="CURRENT file is missing"):
        LevelDBStore(path)
    assert sorted(p.name for p in path.iterdir()) == before
    # A crash while LevelDB created a store leaves a manifest and an empty log but no
    # CURRENT (it writes that last): nothing to lose, and not refused for good.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("LOCK", "LOG", "MANIFEST-000002", "000001.log"):
        (crashed / name).write_bytes(b"")
    LevelDBStore(crashed).close()
    # A new directory, or an empty one, is still a new store.
    for fresh in (tmp_path / "new", tmp_path / "empty"):
        if fresh.name == "empty":
            fresh.mkdir()
        created = LevelDBStore(fresh)
        assert len(created) == 0
        created.close()


def test_a_table_cut_short_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    store = LevelDBStore(path)
    body = {"pad": "x" * 400}
    store.add([Record.create("event", b"o" * 16, seq, seq, body) for seq in range(1, 3000)])
    store.close()
    LevelDBStore(path).close()  # reopened, its log is written out as a table
    (table,) = [f for f in path.iterdir() if f.suffix == ".ldb"][:1]
    with open(table, "r+b") as f:
        f.truncate(table.stat().st_size // 2)
    with pytest.raises(StoreError, match="restore it from a copy"):
        LevelDBStore(path)


_FILL_THEN_FREE = """
import os, resource, signal, sys, time
from crdt import LevelDBStore, Record, StoreWriteFailed

path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
store = LevelDBStore(path)
seq = acked = refused = 0

def add():
    global seq, acked, refused
    seq += 1
    try:
        store.add([Record.create("event", b"o" * 16, seq, seq, {"pad": "x" * 300})])
        acked = seq
    except StoreWriteFailed as exc:
        refused += 1
        seq -= 1
        assert "File too large" in exc.disk

for _ in range(10):
    add()
log = next(f for f in os.listdir(path) if f.endswith(".log"))
size = os.path.getsize(os.path.join(path, log))
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 2000, resource.RLIM_INFINITY))
while refused < 3:  # the disk is full
    add()
# Reads go on meanwhile (a closed store raised plyvel's RuntimeError on every one).
held = [r.seq for r in store.by_origin(b"o" * 16, 1, acked)]
assert held == list(range(1, acked + 1)) and len(store) == acked, (held, acked)
assert store.get(next(store.by_origin(b"o" * 16, 1, 1)).key) is not None
# A probe while the disk is full to the last byte (opening the store again writes a table
# and a manifest): it fails, and the store stays readable (closed first, reads then raised).
resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))
time.sleep(1.1)
try:
    store.probe()
    raise AssertionError("the probe took a write the disk refuses")
except StoreWriteFailed:
    pass
assert len(list(store.by_origin(b"o" * 16, 1, acked))) == acked
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
time.sleep(1.1)  # (a store tries the disk again at most once a second)
add()  # opened again
log = max(f for f in os.listdir(path) if f.endswith(".log"))
size = os.path.getsize(os.path.join(path, log))
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
try:  # full again, mid-way through the probe's write: it must leave no damaged log open
    store.probe()
    raise AssertionError("the probe took a write the disk refuses")
except StoreWriteFailed:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
time.sleep(1.1)
for _ in range(8):  # space is freed
    add()
store.close()
print(acked, len(LevelDBStore(path)))
"""


def test_writes_acknowledged_after_a_full_disk_are_kept(tmp_path: Path) -> None:
    # A synced write the disk refused left LevelDB's log damaged: the writes after it were
    # acknowledged (a peer pushed them on) and were gone when the store was next opened, and
    # their (origin, seq) handed out again for other records (18 acknowledged, 13 kept).
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", _FILL_THEN_FREE, str(tmp_path / "db")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": repo},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    acked, kept = map(int, out.stdout.split())
    assert acked >= 18 and kept == acked


def _filled(path: Path) -> Path:
    store = LevelDBStore(path)
    store.add([Record.create("event", b"o" * 16, seq, seq, {"i": seq}) for seq in range(1, 200)])
    store.close()
    LevelDBStore(path).close()  # reopened, its log is written out as a table
    return path


def _current_names_a_missing_manifest(path: Path) -> None:
    (path / "CURRENT").write_text("MANIFEST-999999\n")


def _tables_gone(path: Path) -> None:
    for table in path.glob("*.ldb"):
        table.unlink()


def _manifest_of_garbage(path: Path) -> None:
    for manifest in path.glob("MANIFEST-*"):
        manifest.write_bytes(bytes(range(256)) * 2)


@pytest.mark.parametrize(
    "damage", [_current_names_a_missing_manifest, _tables_gone, _manifest_of_garbage]
)
def test_a_store_too_damaged_to_open_says_what_to_do(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    # "cannot open the store at .../replica: Corruption: CURRENT points to a non-existent
    # file: ..." said nothing about what to do.
    path = _filled(tmp_path / "replica")
    damage(path)
    with pytest.raises(StoreError) as info:
        LevelDBStore(path)
    said = str(info.value)
    assert said.startswith(f"cannot open the store at {path}: Corruption: ")
    assert said.endswith("; restore it from a copy, or move it aside to start afresh")
    assert "\n" not in said


def test_a_store_path_that_is_a_file_says_so(tmp_path: Path) -> None:
    # It said "cannot open the store at ...: [Errno 17] File exists".
    path = tmp_path / "replica"
    path.write_text("not a store")
    with pytest.raises(StoreError) as info:
        LevelDBStore(path)
    assert str(info.value) == (
        f"{path} is a file, not a store directory; move it aside (the store then starts"
        " afresh there), or use another directory"
    )
    assert path.read_text() == "not a store"


_LINK = b"L" * 32


def _garbled(path: Path, change: Callable[[bytearray, int], None]) -> Record:
    """A store of 199 records, one of whose bytes change() altered inside its table (given
    the table's bytes and where that record's bytes start)."""
    store = LevelDBStore(path)
    records = [
        Record.create("event", b"o" * 16, seq, seq, {"i": seq, "pad": "x" * 50}, [_LINK])
        for seq in range(1, 200)
    ]
    store.add(records)
    store.close()
    LevelDBStore(path).close()  # reopened, its log is written out as a table
    victim = records[99]
    for table in path.glob("*.ldb"):
        data = bytearray(table.read_bytes())
        if (at := data.find(victim.data)) >= 0:
            change(data, at)
            table.write_bytes(bytes(data))
            return victim
    raise AssertionError("the record is in no table")


def _msgpack_never_uses(data: bytearray, at: int) -> None:
    data[at] = 0xC1


def _still_a_record(data: bytearray, at: int) -> None:
    data[data.find(b"x" * 50, at)] = ord("y")


@pytest.mark.parametrize("change", [_msgpack_never_uses, _still_a_record])
@pytest.mark.parametrize("read", ["get", "raw_get", "linked", "of_kind", "by_origin", "raw"])
def test_a_record_garbled_on_disk_is_one_error_at_every_read(
    tmp_path: Path, change: Callable[[bytearray, int], None], read: str
) -> None:
    """LevelDB checks no block's checksum on a read (plyvel's default): a bit flipped in a
    record's bytes came back as a msgpack traceback at peer start and in `metaopt status`,
    or, still a record, as another one, which a peer served to the others under a key it
    does not hash to: they stored it as new and asked for the old key at every session."""
    victim = _garbled(tmp_path / "replica", change)
    store = LevelDBStore(tmp_path / "replica")  # (opening reads the keys alone)
    reads: dict[str, Callable[[], object]] = {
        "get": lambda: store.get(victim.key),
        "raw_get": lambda: store.raw_get(victim.key),
        "linked": lambda: list(store.linked(_LINK)),
        "of_kind": lambda: list(store.of_kind("event")),
        "by_origin": lambda: list(store.by_origin(b"o" * 16, 1, 300)),
        "raw": lambda: list(store.raw_by_origin(b"o" * 16, 1, 300)),
    }
    try:
        with pytest.raises(StoreError, match=f"record {victim.key.hex()[:12]} is damaged; restore"):
            reads[read]()
        assert len(list(store.by_origin(b"o" * 16, 1, 99))) == 99  # the others read as ever
    finally:
        store.close()


class _Garbled:
    """A plyvel database whose point reads meet a block garbled on disk."""

    def __init__(self, db: object) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        raise plyvel.CorruptionError(b"Corruption: bad entry in block")

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_block_garbled_on_disk_is_one_error_at_a_point_read_too(tmp_path: Path) -> None:
    """The scans said "cannot read the store ...; restore it from a copy", but get, raw_get
    and `in` let plyvel's CorruptionError through: in a peer, a sync's traceback."""
    store = LevelDBStore(tmp_path / "replica")
    record = Record.create("event", b"o" * 16, 1, 1, {"i": 1})
    store.add([record])
    db = store._db
    store._db = _Garbled(db)  # type: ignore[assignment]
    try:
        for read in (store.get, store.raw_get, store.__contains__):
            with pytest.raises(StoreError, match="bad entry in block; restore it from a copy"):
                read(record.key)
    finally:
        store._db = db
        store.close()
