"""A store directory by another name: refused a second open in this process however it is
spelt or renamed, and opened whatever bytes its real path holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import metaopt
from crdt import LevelDBStore, StoreLocked
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
