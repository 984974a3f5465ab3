"""A damaged LevelDB directory is refused, never replaced by an empty database."""

from __future__ import annotations

from pathlib import Path

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
