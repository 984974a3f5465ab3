"""A store directory by another name: refused a second open in this process however it is
spelt or renamed, and opened whatever bytes its real path holds."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import plyvel
import pytest

import crdt._leveldb as ldb
import metaopt
from crdt import LevelDBStore, StoreLocked, StoreWriteFailed
from metaopt import MetaoptError
from tests.crdt.test_store_contract import sample

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

    LevelDBStore(tmp_path / "a")  # dropped at once
    gc.collect()
    (tmp_path / "a").rename(tmp_path / "b")
    LevelDBStore(tmp_path / "b").close()


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

    class Interrupted(dict):  # type: ignore[type-arg]
        def setdefault(self, key: object, default: object = None) -> object:
            owner = super().setdefault(key, default)
            signal.raise_signal(signal.SIGINT)  # delivered here, as a real Ctrl-C would be
            return owner

    held = Interrupted()
    monkeypatch.setattr(ldb, "_HELD", held)
    with pytest.raises(KeyboardInterrupt):
        LevelDBStore(tmp_path / "s")
    assert dict(held) == {}  # let go of
    monkeypatch.setattr(ldb, "_HELD", {})  # (no Ctrl-C this time)
    LevelDBStore(tmp_path / "s").close()  # (it was StoreLocked)


def _ctrl_c_at_finalize(monkeypatch: pytest.MonkeyPatch) -> None:
    real = weakref.finalize

    def finalize(*args: object, **kwargs: object) -> object:
        signal.raise_signal(signal.SIGINT)  # a Ctrl-C delivered just here
        return real(*args, **kwargs)

    monkeypatch.setattr(ldb.weakref, "finalize", finalize)


def test_ctrl_c_before_the_finalize_on_first_open_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ldb, "_HELD", {})  # (this test's entries only)
    with monkeypatch.context() as m:
        _ctrl_c_at_finalize(m)
        with pytest.raises(KeyboardInterrupt):
            LevelDBStore(tmp_path / "s")
    gc.collect()
    LevelDBStore(tmp_path / "s").close()  # (it was StoreLocked: the directory stayed noted)


def test_ctrl_c_in_probes_reopen_of_a_replaced_directory_then_close_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ldb, "_RETRY_AFTER", 0.0)
    monkeypatch.setattr(ldb, "_HELD", {})  # (this test's entries only)
    where = tmp_path / "replica"
    store = LevelDBStore(where)
    store.add(sample()[:2])
    _refuse_one_write(store, monkeypatch)
    where.rename(tmp_path / "old")
    shutil.copytree(tmp_path / "old", where)
    with monkeypatch.context() as m:
        _ctrl_c_at_finalize(m)
        with pytest.raises(KeyboardInterrupt):
            store.probe()
    store.close()
    assert set(ldb._HELD) == set(), ldb._HELD
    LevelDBStore(where).close()


def test_gc_finalizing_a_dropped_store_inside_the_held_lock_does_not_deadlock(
    tmp_path: Path,
) -> None:
    # A store dropped unclosed in a reference cycle is freed by whichever allocation runs the
    # cycle collector next: it was the StoreLocked that _open built inside `with _HELD_LOCK:`,
    # and its finalizer (_let_go) took _HELD_LOCK again in the same thread: a hang (3 of 3).
    # The scan sets generation 1's threshold so that its collection lands on each allocation
    # of the refused open in turn.
    code = textwrap.dedent(
        f"""
        import faulthandler, gc, os
        from crdt import LevelDBStore, StoreLocked
        d = {str(tmp_path)!r}
        a = LevelDBStore(os.path.join(d, "a"))
        faulthandler.dump_traceback_later(8, exit=True)
        for t in range(1, 300):
            gc.disable(); gc.collect()
            dropped = LevelDBStore(os.path.join(d, f"b{{t}}"))
            dropped.me = dropped  # a cycle: only the collector frees it
            gc.collect(0)  # into generation 1, then dropped there
            del dropped
            gc.set_threshold(1, gc.get_count()[1] + t, 10**9)
            gc.enable()
            try:
                LevelDBStore(os.path.join(d, "a"))
            except StoreLocked:
                pass
            gc.disable()
        print("returned")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert "returned" in done.stdout, done.stderr
