"""A Ctrl-C landing in a store's add or probe: held until the bookkeeping is done, never lost;
a second one lets it through at once (crdt/_interrupts.py)."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
from pathlib import Path

import plyvel
import pytest

from crdt import LevelDBStore, MemoryStore, Record, Store, VersionVector
from tests.crdt.test_store_contract import _consistent

A = b"A" * 16


def rec(seq: int) -> Record:
    return Record.create("trial", A, seq, 100 + seq, {"n": seq}, ())


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # (its handler runs at the next bytecode)


# The probe tells of a batch that landed despite a refused sync once only: interrupted there,
# the subscribers after the interrupted one never heard of it.
def test_a_ctrl_c_while_the_probe_tells_of_landed_records_reaches_every_subscriber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = [rec(1), rec(2)]
    monkeypatch.setattr("crdt._leveldb._RETRY_AFTER", 0.0)
    with LevelDBStore(tmp_path / "db") as store:
        write = store._write

        def written_then_refused(*args: object, **kwargs: object) -> None:
            write(*args, **kwargs)  # type: ignore[arg-type]
            raise plyvel.IOError(b"IO error: sync refused")

        monkeypatch.setattr(store, "_write", written_then_refused)
        with pytest.raises(Exception):  # noqa: B017 - StoreWriteFailed
            store.add(landed)
        monkeypatch.undo()
        monkeypatch.setattr("crdt._leveldb._RETRY_AFTER", 0.0)
        heard: list[list[Record]] = []
        armed = [True]

        def interrupted(batch: list[Record]) -> None:
            if armed:
                armed.clear()
                _sigint()
            heard.append(batch)

        store.subscribe(interrupted)
        store.subscribe(heard.append)
        with pytest.raises(KeyboardInterrupt):
            store.add([rec(3)])  # (the probe first: it reopens and tells of the landed batch)
        assert heard == [landed, landed]


# Under asyncio.run the runner's SIGINT handler raises KeyboardInterrupt at the second Ctrl-C
# (the first cancelled the main task, whose cleanup writes): held like Python's own.
def _run_cleanup_add(store: Store, records: list[Record]) -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, _sigint)  # first Ctrl-C: cancels main
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            store.add(records)  # e.g. a Study's tell(failed) on the way out
            raise

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_under_asyncio_run_reaches_every_subscriber_first() -> None:
    store = MemoryStore()
    heard: list[list[Record]] = []

    def interrupted(batch: list[Record]) -> None:
        _sigint()  # second Ctrl-C
        heard.append(batch)

    store.subscribe(interrupted)
    store.subscribe(heard.append)
    records = [rec(1)]
    _run_cleanup_add(store, records)
    assert heard == [records, records]


def test_a_ctrl_c_under_asyncio_run_leaves_the_version_vector_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [rec(1), rec(2)]
    with LevelDBStore(tmp_path / "db") as store:
        add_run = VersionVector.add_run

        def interrupted(vv: VersionVector, origin: bytes, lo: int, hi: int) -> None:
            _sigint()  # second Ctrl-C, between the synced write and the summaries
            add_run(vv, origin, lo, hi)

        monkeypatch.setattr(VersionVector, "add_run", interrupted)
        _run_cleanup_add(store, records)
        monkeypatch.undo()
        _consistent(store, records)


# A block that does not end (a subscriber stuck waiting on another thread): one Ctrl-C is
# held until it ends, a second lets both through at once, as asyncio.run's second Ctrl-C does.
def _blocked_add(store: MemoryStore, at: tuple[float, ...], wait: float) -> bool:
    """Add while a subscriber blocks up to ``wait`` s, with Ctrl-Cs at ``at``; whether the
    subscriber's wait had run out when the add raised KeyboardInterrupt."""
    full: queue.Queue[list[Record]] = queue.Queue(maxsize=1)
    full.put([])
    ran_out = threading.Event()

    def blocked(batch: list[Record]) -> None:
        try:
            full.put(batch, timeout=wait)
        except queue.Full:
            ran_out.set()
            raise

    store.subscribe(blocked)
    timers = [threading.Timer(t, _sigint) for t in at]
    for timer in timers:
        timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.add([rec(1)])
    finally:
        for timer in timers:
            timer.cancel()
    return ran_out.is_set()


def test_a_second_ctrl_c_breaks_out_of_a_subscriber_that_does_not_return() -> None:
    assert not _blocked_add(MemoryStore(), (0.2, 0.4), wait=30.0)  # (not the 30 s wait)


def test_one_ctrl_c_in_a_blocked_subscriber_is_raised_once_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    assert _blocked_add(store, (0.2,), wait=1.0)  # held: the wait ran out, then the Ctrl-C
    assert "subscriber failed" in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# A SIGINT handler installed during the add (by a subscriber) is kept, not replaced.
def test_a_sigint_handler_a_subscriber_installs_survives_the_add() -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    store = MemoryStore()
    store.subscribe(lambda batch: signal.signal(signal.SIGINT, mine))
    try:
        store.add([rec(1)])
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
