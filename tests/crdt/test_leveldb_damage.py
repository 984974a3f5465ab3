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
