"""A peer whose disk refuses writes: one line a minute, and it holds back until it can write."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path
from typing import Any

import plyvel
import pytest

from crdt import Record, StoreWriteFailed, push_message
from metaopt._errors import MetaoptError
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node
from metaopt.peer._storage import StorageTrouble, storage_failure
from metaopt.peer._wire import Request

FULL = StoreWriteFailed(
    "cannot write the store at /d/replica: IO error: /d/replica/000012.log: No space left on"
    " device",
    "No space left on device",
)


def test_the_disk_s_faults_are_told_from_bugs() -> None:
    assert storage_failure(FULL) == "No space left on device"
    assert storage_failure(plyvel.IOError("IO error: x: No space left on device")) is None
    assert storage_failure(OSError(errno.EROFS, "Read-only file system")) == "Read-only file system"
    assert storage_failure(OSError(errno.ENOENT, "No such file")) is None
    assert storage_failure(ValueError("No space left on device")) is None  # not the disk's word


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free space on its disk"),
        (errno.EROFS, "remount it read-write"),
        (errno.EIO, "check its disk"),
    ],
)
def test_the_advice_fits_what_the_disk_said(
    code: int, advice: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A read-only disk was told to free space (6 of 6 read-only events, in the log and in
    # `peer status`, which says what the peer's log does).
    trouble = StorageTrouble(clock=lambda: 0.0)
    assert trouble.note(OSError(code, os.strerror(code)), "a sync")
    [line] = [r.getMessage() for r in caplog.records]
    assert advice in line.rsplit("until it can; ", 1)[1], line
    assert ("free space" in line) == (code == errno.ENOSPC), line


def test_one_line_a_minute_and_the_trouble_ends_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    trouble = StorageTrouble(clock=lambda: now[0], every=60.0, hold=10.0)
    assert not trouble.note(KeyError("a bug"), "x") and trouble.problem() is None
    for _ in range(500):
        assert trouble.note(FULL, "a sync")
    assert trouble.problem() == "cannot write its replica (No space left on device)"
    now[0] = 61.0
    trouble.note(FULL, "a sync")
    said = [r.getMessage() for r in caplog.records if "cannot write the replica" in r.getMessage()]
    assert len(said) == 2 and "499 more such failures" in said[1]
    # It holds until a write succeeds, trying the store every 10 s (nothing else writes).
    assert trouble.problem() is not None and trouble.probe_due()
    assert not trouble.probe_due()
    now[0] = 72.0
    assert trouble.probe_due() and trouble.problem() is not None
    trouble.recovered()
    assert trouble.problem() is None and not trouble.probe_due()


@pytest.mark.integration  # (it opens sockets on 127.0.0.1)
@pytest.mark.asyncio
async def test_a_peer_that_cannot_write_holds_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # It answered its peers (who then counted it live, and its trials running, for as long as
    # its disk was full), took its own trials for lost at every pass, and logged a traceback
    # for each refused write: 547 KB in 65 s.
    node = Node(PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False))

    def full(records: Any) -> Any:
        raise FULL

    now = [0.0]
    node.storage = StorageTrouble(clock=lambda: now[0])
    node.replicator.sessions = 3  # caught up with its peers, long since
    later = node.started_at + 1000
    node.monotonic = lambda: later  # type: ignore[method-assign]
    assert node.caught_up() and node.listened()
    try:
        monkeypatch.setattr(node.store, "add", full)
        pushed = push_message([Record.create("event", b"o" * 16, 1, 1, {"i": 1})])
        sync = Request("sync", b"p" * 16, "127.0.0.1:9", pushed)
        for _ in range(4):  # the first one failed as the disk did; the rest are not tried
            with pytest.raises(MetaoptError, match="this peer cannot write its replica"):
                await node._on_sync(sync)
        assert node.status()["storage"] == "cannot write its replica (No space left on device)"
        with pytest.raises(MetaoptError, match="this peer cannot write its replica"):
            await node._on_gossip(Request("gossip", b"p" * 16, "127.0.0.1:9", []))
        passes = []
        monkeypatch.setattr(node.runner.early_stopping, "thaw", lambda: passes.append(1))
        await node._schedule_once()
        assert passes == []
        # It holds for as long as the disk refuses (it lapsed after 10 s, and the peer was
        # live again for the others, its trials "running", while nothing could be recorded).
        monkeypatch.setattr(node.store, "probe", lambda: full([]))
        now[0] = 25.0
        await node._schedule_once()
        with pytest.raises(MetaoptError, match="this peer cannot write its replica"):
            await node._on_gossip(Request("gossip", b"p" * 16, "127.0.0.1:9", []))
        monkeypatch.undo()
        now[0] = 50.0
        await node._schedule_once()  # the probe succeeds: it goes on
        assert node.status()["storage"] is None
        # ... as a peer that has just started: it heard nobody meanwhile, and took their
        # trials for lost ("no news for 141 s"), running completed ones again.
        assert not node.caught_up() and not node.listened()
        node.replicator.sessions = 4
        assert node.caught_up()
        node.store.add([Record.create("event", b"o" * 16, 2, 2, {"i": 2})])
    finally:
        await node.stop()
    lines = [r for r in caplog.records if "cannot write the replica" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None]


@pytest.mark.integration  # (it opens sockets on 127.0.0.1)
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_peer_whose_data_directory_goes_from_under_it_stops_saying_so(
    tmp_path: Path, how: str
) -> None:
    # `rm -rf` of a running peer's data directory: it went on writing its replica into
    # deleted files without a word, and `peer status` and `peer stop` said no peer ran there
    # (3 of 3), so only a kill by pid stopped it; a lone peer lost all it recorded after.
    data = tmp_path / "peer"
    timing = Timing(peer_timeout=2.0, gossip=0.1, anti_entropy=1.0, lost_after=3.0)
    node = Node(PeerConfig(data_dir=data, port=0, mdns=False, timing=timing))
    await node.start()
    try:
        await asyncio.sleep(0.3)
        assert not node.stopping  # (its own directory, as opened)
        shutil.rmtree(data)
        if how == "replaced":
            data.mkdir()  # (a backup restored over it, say: not the files it has open)
        await asyncio.wait_for(node.run_until_stopped(), 10)
        said = f"{data} was deleted or replaced while this peer ran"
        assert node.failed is not None and said in node.failed, node.failed
    finally:
        await node.stop()
