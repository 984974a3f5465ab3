"""collector_paused: the cycle collector held off for a block, and as it was after it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metaopt._collector import collector_paused
from metaopt._errors import MetaoptError


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_paused_in_the_block_and_on_again_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_in_the_block_turns_it_on_again() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("out")
    assert gc.isenabled()


def test_a_nested_block_leaves_it_paused_and_a_paused_one_stays_paused() -> None:
    gc.enable()
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()  # (the outer block's to turn on)
    assert gc.isenabled()
    gc.disable()  # someone else's pause
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_the_reads_that_pause_it_leave_it_on() -> None:
    # The CLI's decoding of its peer's pages, garbage included, and a page of trials.
    from metaopt.peer._wire import Reply, WireError, decode_reply

    gc.enable()
    assert decode_reply(Reply(True, {"trial_list": [{"id": "ab"}] * 3}).encode(), False).ok
    with pytest.raises(WireError):
        decode_reply(b"\xc1garbage", False)
    assert gc.isenabled()


def test_an_offline_read_leaves_it_on(tmp_path: Path) -> None:
    from crdt import LevelDBStore
    from metaopt._records import ExperimentSpec, experiment_record
    from metaopt.peer._identity import DataDir
    from metaopt.peer._offline import OfflinePeer

    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    store = LevelDBStore(dirs.replica)
    store.add([experiment_record(ExperimentSpec("sweep", {"x": "uniform(0, 1)"}))])
    store.close()
    gc.enable()
    [listed] = OfflinePeer(tmp_path).call("api.experiments")
    assert listed["name"] == "sweep"
    with pytest.raises(MetaoptError, match="no experiment"):
        OfflinePeer(tmp_path).call("api.experiment", "other")
    assert gc.isenabled()


def test_no_collection_runs_in_a_block_nor_when_a_nested_block_ends() -> None:
    """Pins "no collection inside the block": building far past the collector's threshold
    (700 containers), and leaving a nested block, start no collection; a collection there is
    the repeated walk of everything built so far that the pause exists to avoid."""
    gc.enable()
    starts: list[dict[str, Any]] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            starts.append(info)

    gc.callbacks.append(seen)
    try:
        with collector_paused():
            built = [[i] for i in range(20_000)]
            with collector_paused():
                built += [[i] for i in range(20_000)]
            built += [[i] for i in range(20_000)]
            inside = len(starts)
    finally:
        gc.callbacks.remove(seen)
    assert len(built) == 60_000
    assert inside == 0
    assert gc.isenabled()
