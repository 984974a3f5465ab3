"""A store directory by another name: refused a second open in this process however it is
spelt or renamed, and opened whatever bytes its real path holds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import plyvel
import pytest

import crdt._leveldb as ldb
import metaopt
from crdt import LevelDBStore, StoreLocked, StoreWriteFailed
from metaopt import MetaoptError

SPACE = {"x": "uniform(0, 1)"}


@pytest.fixture
def odd(tmp_path: Path) -> Path:
    target = tmp_path / os.fsdecode(b"run-\xff")  # (a directory an old tool named in Latin-1)
    target.mkdir()
    return target


def test_a_study_through_a_symlink_to_an_undecodable_directory_opens(
    tmp_path: Path, odd: Path
) -> None:
    (tmp_path / "link").symlink_to(odd)
    with metaopt.Study(space=SPACE, path=tmp_path / "link" / "s", algorithm="random") as study:
        study.tell(study.ask(), 1.0)  # (by its real path, a raw ValueError from plyvel)


def test_a_relative_path_under_an_undecodable_working_directory_opens(
    odd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(odd)
    with metaopt.Study(space=SPACE, path="s", algorithm="random") as study:
        study.tell(study.ask(), 1.0)


def test_the_store_itself(tmp_path: Path, odd: Path) -> None:
    (tmp_path / "link").symlink_to(odd)
    LevelDBStore(tmp_path / "link" / "replica").close()


def test_a_held_directory_renamed_is_refused_a_second_open(tmp_path: Path) -> None:
    space = {"x": "uniform(0, 1)"}
    with metaopt.Study(space=space, path=tmp_path / "a") as first:
        (tmp_path / "a").rename(tmp_path / "b")
        with pytest.raises(MetaoptError, match="held by another Study"):
            second = metaopt.Study(space=space, path=tmp_path / "b")
            assert second.node_id == first.node_id  # (both would write one node's numbers)
            second.close()


def test_the_store_renamed_while_open_is_refused_a_second_open(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "a"):
        (tmp_path / "a").rename(tmp_path / "b")
        with pytest.raises(StoreLocked):
            LevelDBStore(tmp_path / "b")
    LevelDBStore(tmp_path / "b").close()  # (closed, it lets go)


def test_a_store_dropped_unclosed_lets_go_of_its_directory(tmp_path: Path) -> None:
    import gc

    LevelDBStore(tmp_path / "a")  # dropped at once
    gc.collect()
    (tmp_path / "a").rename(tmp_path / "b")
    LevelDBStore(tmp_path / "b").close()


# (Imported here: the contract's sample records.)
from tests.crdt.test_store_contract import sample  # noqa: E402


def _refuse_one_write(store: LevelDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise plyvel.IOError(b"IO error: log: No space left on device")

    with monkeypatch.context() as m:
        m.setattr(store, "_write", refused)
        with pytest.raises(StoreWriteFailed):
            store.add(sample()[:1])


def test_probe_reopening_a_replaced_directory_lets_go_of_it_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The directory is replaced under the open store (a restore from a copy, a stray rm -rf
    # and a re-create); a full disk makes probe() open the store again by its path: the new
    # directory's (dev, ino) was noted and never let go of (close() let go of the first one).
    monkeypatch.setattr(ldb, "_RETRY_AFTER", 0.0)
    where = tmp_path / "replica"
    store = LevelDBStore(where)
    store.add(sample()[:2])
    _refuse_one_write(store, monkeypatch)
    where.rename(tmp_path / "old")  # moved aside while open, a copy put in its place
    shutil.copytree(tmp_path / "old", where)
    store.probe()  # reopens at `where`: the copy, another inode
    store.close()
    before = set(ldb._HELD)
    # Closed: nothing of this process holds `where` now.
    LevelDBStore(where).close()  # (it was StoreLocked: "in use by another store of this process")
    assert before == set()


def test_a_ctrl_c_just_after_the_directory_is_noted_lets_go_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGINT arriving just after the directory was noted (while _HELD_LOCK was waited for,
    # say) left it noted: refused for the life of the process.
    import signal

    class Interrupted(set):  # type: ignore[type-arg]
        def add(self, item: object) -> None:
            super().add(item)
            signal.raise_signal(signal.SIGINT)  # delivered here, as a real Ctrl-C would be

    held = Interrupted()
    monkeypatch.setattr(ldb, "_HELD", held)
    with pytest.raises(KeyboardInterrupt):
        LevelDBStore(tmp_path / "s")
    assert set(held) == set()  # let go of
    monkeypatch.setattr(ldb, "_HELD", set(held))  # (no Ctrl-C this time)
    LevelDBStore(tmp_path / "s").close()  # (it was StoreLocked)
