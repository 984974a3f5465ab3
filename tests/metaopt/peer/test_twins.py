"""A data directory copied to make a second peer: two peers under one node id.

Unnoticed, each took the other's running trials (recorded under "its" node id) for its own,
cut short by a restart, and re-ran them: points ran twice and a budget of 4 took 5 trials.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from metaopt._errors import MetaoptError
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node
from metaopt.peer._transport import Misaddressed, PeerUnreachable, RemoteError
from metaopt.peer._twins import TwinWatch
from metaopt.peer._wire import Request, WireError, decode_request
from tests.metaopt.peer.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = """\
import argparse, time, metaopt
p = argparse.ArgumentParser(); p.add_argument("--x", type=float, default=0.0)
a = p.parse_args()
time.sleep(1.5)
metaopt.report(loss=(a.x - 0.3) ** 2, step=1)
"""


def test_a_request_carries_its_process_token_and_age_and_one_without_reads_as_none() -> None:
    sent = Request("gossip", b"n" * 16, "127.0.0.1:1", None, run=b"r" * 8, age=12.5)
    got = decode_request(sent.encode())
    assert (got.run, got.age) == (b"r" * 8, 12.5)
    got = decode_request(Request("gossip", b"n" * 16, "127.0.0.1:1", None).encode())
    assert (got.run, got.age) == (None, None)
    for bad in (float("nan"), True, "12"):  # (a request no peer sends: refused whole)
        with pytest.raises(WireError):
            decode_request(Request("gossip", b"n" * 16, "127.0.0.1:1", None, age=bad).encode())  # type: ignore[arg-type]


def test_the_twin_started_later_stops_and_the_other_runs_alone(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c")
    try:
        original = cluster.start_peer("a")
        cluster.kill(original, signal.SIGTERM)  # a clean stop, then copy it whole
        copy_dir = tmp_path / "c" / "b"
        shutil.copytree(original.data_dir, copy_dir)
        cluster.restart(original)
        time.sleep(0.05)  # (the copy's process starts later by the clock too)
        # It joins the original, and may hear it and stop before its address file is seen:
        # not waited for as a peer that must come up.
        copy = cluster.start_peer("b", data_dir=copy_dir, wait=False)
        assert (copy_dir / "node_id").read_text() == (original.data_dir / "node_id").read_text()
        assert original.proc is not None and copy.proc is not None
        # The original hears the copy's call and calls it back; the copy, hearing an elder
        # process under its id, stops (under a supervisor, the copy restarted stops again,
        # and the original runs on: not each in turn).
        wait_for(lambda: copy.proc.poll() is not None, 30, copy.log)
        said = [line for line in copy.log().splitlines() if "this peer's node id" in line]
        assert said and "started before this one" in said[0] and "give this one" in said[0]
        assert original.proc.poll() is None  # it goes on, alone, as this node
        assert "started after this one" in original.log()  # (it says so, once)
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / "train.py").write_text(TRAIN)
        out = original.cli(
            "submit", "--name", "dup", "--max-trials", "4",
            str(tmp_path / "w" / "train.py"), "--x~uniform(0, 1)",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr

        def finished() -> bool:
            rows = original.json("status")
            return bool(rows) and rows[0]["finished"]

        wait_for(finished, 60, original.log)
        time.sleep(1)
        assert original.json("status", "dup")["trials"] == 4
        assert "restarted while it ran" not in original.log()
        assert "this peer stops" not in original.log()
    finally:
        cluster.close()


class _Wired:
    """Nodes driven by hand: no server, no socket; every call goes to the addressed node's
    own handler, as the transport would (run token included). One clock for all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = time.time()
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, addr: str, key: str | None = None, skew: float = 0.0) -> Node:
        """A node at ``addr`` whose wall clock reads ``skew`` seconds from the shared one."""
        config = PeerConfig(data_dir=self.root / name, port=0, mdns=False, key_text=key)
        made = Node(config, clock=lambda: self.now + skew, monotonic=lambda: self.now)
        made.addr = addr
        made.peers.own_addrs = frozenset({addr})
        made.membership.client = self._client_of(made)  # type: ignore[assignment]
        made.replicator.client = made.membership.client  # (its sessions go the same way)
        self.nodes[addr] = made
        return made

    def _client_of(self, sender: Node) -> Any:
        async def call(
            addr: str, op: str, body: Any = None, to: bytes | None = None, deferrable: bool = False
        ) -> Any:
            if addr not in self.nodes:
                raise PeerUnreachable(f"nothing listens at {addr}")
            target = self.nodes[addr]
            if to is not None and to != target.node_id:
                raise Misaddressed("another node")
            lag = target.clock() - sender.clock()  # (as the server sets it: no time in flight)
            request = Request(op, sender.node_id, sender.addr, body, remote="127.0.0.1",
                              to=to, lag=lag, run=sender.twins.token,
                              age=sender.twins.age(self.now))  # fmt: skip
            try:
                return await target._handlers()[op](request)
            except MetaoptError as exc:  # (as the server answers it, and the client raises)
                raise RemoteError(f"{addr}: {exc}") from None

        return SimpleNamespace(call=call)

    async def rounds(self, n: int, *nodes: Node) -> None:
        for _ in range(n):
            for node in nodes:
                if not node.failed:
                    await node._gossip()
            self.now += 1.0
            await asyncio.sleep(0.01)  # (the calls to where a node's own id was heard of)

    def close(self) -> None:
        for node in self.nodes.values():
            node.store.close()

    def copy(self, name: str, to: str) -> None:
        shutil.copytree(self.root / name, self.root / to)

    def original_and_copy(self) -> None:
        """A data directory "a" that a peer ran in once, and its copy "copy"."""
        first = self.node("a", "127.0.0.1:41000")
        first.store.close()
        del self.nodes[first.addr]
        self.copy("a", "copy")


@pytest.mark.asyncio
async def test_twins_joined_through_a_third_peer_hear_each_other(tmp_path: Path) -> None:
    """Twins that reach each other only through a third peer (or mDNS) never heard each
    other, and neither stopped (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    a, twin, _ = await _twins_through_a_third_peer(wired)
    try:
        called = {p.addr for n in (a, twin) for p in n.peers.all()}
        assert twin.failed and a.failed is None, (
            f"the later twin did not stop after 10 rounds; the twins know only {sorted(called)}"
        )
    finally:
        wired.close()


async def _twins_through_a_third_peer(wired: _Wired) -> tuple[Node, Node, Node]:
    """The original, its copy (started later) and a third peer c, after ten gossip rounds."""
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01  # (the copy's process starts later)
    key = a.key.to_text()
    twin, c = wired.node("copy", "127.0.0.1:41002"), wired.node("c", "127.0.0.1:41003", key)
    assert a.node_id == twin.node_id and a.twins.age(wired.now) > twin.twins.age(wired.now)
    # c knew the original (it talked to it before the copy); both twins have c as their seed
    # (a --join, or the `peers` file the copy inherited).
    c.peers.add(a.node_id, a.addr, wired.now, contacted=True)
    a.peers.add_seed(c.addr)
    twin.peers.add_seed(c.addr)
    await wired.rounds(10, a, twin, c)
    return a, twin, c


def _runs_on(original: Node, copy: Node) -> str:
    """What the original says once the copy its call reached has stopped."""
    return (
        f"another peer ran with this peer's node id at {copy.addr}, started after this one"
        f" (its data directory a copy of {original.dirs.root}?): it stops, and this one runs on"
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("first_call", ["gossip", "sync"])
async def test_the_twin_whose_call_stopped_the_copy_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first_call: str
) -> None:
    """Told by a third peer of its own id at the copy's address, the original called there
    and the copy stopped, before the copy had called it: the original said nothing at all,
    where the README says it says it runs on (2 of 6 copies started, a README walk). Nor
    when its call was an anti-entropy session, to a seed where the copy came up (4 of 4, a
    review)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01  # (the copy's process starts later)
    twin, c = wired.node("copy", "127.0.0.1:41002"), wired.node("c", "127.0.0.1:41003")
    timeout = a.config.timing.peer_timeout
    try:
        with caplog.at_level(logging.WARNING, logger="metaopt"):
            if first_call == "gossip":
                await twin.membership._gossip_with(c.addr, timeout)  # c hears of the copy
                await a.membership._gossip_with(c.addr, timeout)  # and tells the original
                await asyncio.sleep(0.01)  # (its call to the copy)
            else:
                assert not await a.replicator.reconcile(twin.addr)  # (a --join of the copy's)
            await a.membership._gossip_with(twin.addr, timeout)  # (said once, not again)
        assert twin.failed and a.failed is None
        said = [r.getMessage() for r in caplog.records if r.name.startswith("metaopt")]
        assert said == [twin.failed + "; this peer stops", _runs_on(a, twin)]
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_the_twin_called_first_by_the_copy_says_it_calls_it_and_then_that_it_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The copy's call reached the original first: the original said "calling it, so that it
    stops", and never that it did (both lines were kept by one memory of the copy's token;
    a wire review, 1 of 1)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01  # (the copy's process starts later)
    twin = wired.node("copy", "127.0.0.1:41002")
    timeout = a.config.timing.peer_timeout
    try:
        with caplog.at_level(logging.WARNING, logger="metaopt"):
            await twin.membership._gossip_with(a.addr, timeout)  # the copy calls first
            await asyncio.sleep(0.01)  # (the original's call back)
            await a.membership._gossip_with(twin.addr, timeout)  # (said once, not again)
        assert twin.failed and a.failed is None
        said = [r.getMessage() for r in caplog.records if r.name.startswith("metaopt")]
        assert said == [
            f"another peer runs with this peer's node id at {twin.addr}, started after this"
            f" one (its data directory a copy of {a.dirs.root}?): calling it, so that it stops",
            twin.failed + "; this peer stops",
            _runs_on(a, twin),
        ]
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_the_stopping_twin_does_not_tell_the_cluster_that_the_other_leaves(
    tmp_path: Path,
) -> None:
    """The copy stopped as any peer does, telling its live peers, under the node id it shares
    with the original, that it was leaving: they counted the original gone until it next
    called them (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    a, twin, c = await _twins_through_a_third_peer(wired)
    try:
        assert twin.failed and a.failed is None
        timeout = c.config.timing.peer_timeout
        assert a.node_id in {p.node_id for p in c.peers.live(wired.now, timeout)}
        await twin.membership.leave()  # what the copy's Node.stop() does next, as any stop
        assert a.node_id in {p.node_id for p in c.peers.live(wired.now, timeout)}
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_the_copy_started_later_stops_even_when_its_clock_is_behind(tmp_path: Path) -> None:
    """The copy starts 30 s after the original, on a machine whose clock is 60 s behind
    (peers accept clocks up to 2 minutes apart): by the tokens' own clocks, the original
    stopped (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    original = wired.node("a", "127.0.0.1:41001")
    wired.now += 30.0
    copy = wired.node("copy", "127.0.0.1:41002", skew=-60.0)
    copy.peers.add_seed(original.addr)
    try:
        await wired.rounds(3, copy, original)
        assert copy.failed and original.failed is None, (copy.failed, original.failed)
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_twin_restarted_again_and_again_stops_each_time_and_the_other_runs_on(
    tmp_path: Path,
) -> None:
    """Under a supervisor that restarts what exits, twins that each --join the other stopped
    each other in turn (22 stops in 40 s; a review of the session's fixes): the one that
    heard the other stopped, and a restarted twin always called first."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    try:
        for life in range(3):
            wired.now += 5.0
            twin = wired.node("copy", "127.0.0.1:41002")  # started (again) by its supervisor
            twin.peers.add_seed(a.addr)
            a.peers.add_seed(twin.addr)
            await wired.rounds(3, twin, a)  # the restarted one calls first
            assert twin.failed and a.failed is None, f"life {life}"
            twin.store.close()
            del wired.nodes[twin.addr]
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_copy_restarted_after_its_clock_was_stepped_back_does_not_stop_the_original(
    tmp_path: Path,
) -> None:
    """The copy's first life ran on a clock 60 s fast (a cloned VM before NTP synced); it
    heard the original and stopped. Restarted 5 s later with its clock stepped right, its
    requests' lag at the original is 60 s above the least lag the original recorded for
    this node id (the first life's): read as a 60 s wait, the 0 s old copy is taken for
    60 s old, and the original, 15 s old, stopped for it (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    original = wired.node("a", "127.0.0.1:41001")
    try:
        wired.now += 5.0
        first = wired.node("copy", "127.0.0.1:41002", skew=60.0)
        first.peers.add_seed(original.addr)
        await wired.rounds(3, first, original)
        assert first.failed and original.failed is None  # (as it should)
        first.store.close()
        del wired.nodes[first.addr]
        wired.now += 5.0
        second = wired.node("copy", "127.0.0.1:41003")  # its clock now right (skew 0)
        second.peers.add_seed(original.addr)
        await wired.rounds(3, second, original)
        assert original.failed is None, f"the original stopped: {original.failed}"
        assert second.failed
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_copy_caught_up_takes_no_running_trial_for_its_own_before_its_twin_is_heard(
    tmp_path: Path,
) -> None:
    """A copy of a running peer's data directory, caught up by its first anti-entropy
    session, took the original's running trials (recorded under the id they share) for its
    own cut short by a restart and re-ran them, before the twins heard of each other (5 of 7
    copies started in a soak of 3 peers, each such trial then running twice, its curve mixing
    two runs). It is caught up once its gossip has been answered, which names where its id
    was heard of, and the call there has had its answer."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01
    twin = wired.node("copy", "127.0.0.1:41002")
    c = wired.node("c", "127.0.0.1:41003", a.key.to_text())
    c.peers.add(a.node_id, a.addr, wired.now, contacted=True)
    twin.peers.add_seed(c.addr)  # (the peers file it copied names c)
    try:
        twin.replicator.sessions += 1  # its first anti-entropy session, with c, is done
        assert not twin.caught_up(), "caught up before it could have heard of its twin"
        await wired.rounds(1, twin)  # c names a's address; the twin calls; a calls back
        assert twin.failed and a.failed is None and not twin.caught_up()
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_copy_joining_the_original_itself_is_not_caught_up_before_it_calls_back(
    tmp_path: Path,
) -> None:
    """Its seed the original, the copy's gossip is answered by the original, which names no
    other address of their id (its table does not hold itself): caught up by its first
    session and that answer, the copy took the original's running trials for its own
    before the original's call back came (1 of 6 real copies; a review of the fix above)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01
    twin = wired.node("copy", "127.0.0.1:41002")
    twin.peers.add_seed(a.addr)  # `peer start --join` the original (or its address remembered)
    calls_back = a.membership.client.call
    held: list[str] = []

    async def held_back(addr: str, *args: Any, **kwargs: Any) -> Any:
        held.append(addr)  # (the call back is under way, and slow)
        raise PeerUnreachable("not yet")

    a.membership.client.call = held_back  # type: ignore[method-assign]
    try:
        twin.replicator.sessions += 1  # its first anti-entropy session, with the original
        await twin._gossip()
        assert held == [twin.addr] and twin.failed is None
        assert not twin.caught_up(), "caught up before its twin could call back"
        wired.now += 1.0
        a.membership.client.call = calls_back  # type: ignore[method-assign]
        a.twins._called.clear()  # (it calls again: RECALL_AFTER, shortened)
        await wired.rounds(1, twin)
        assert twin.failed and not twin.caught_up()
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_peer_restarted_on_another_port_is_caught_up_once_its_old_address_is_silent(
    tmp_path: Path,
) -> None:
    """No twin: a peer restarted (on a new port) is caught up once its first gossip is
    answered and the call to its old address, which a peer names, has failed, a moment
    for an answer later; restarted on its old address, at once."""
    wired = _Wired(tmp_path)
    a = wired.node("a", "127.0.0.1:41001")
    c = wired.node("c", "127.0.0.1:41003", a.key.to_text())
    c.peers.add(a.node_id, a.addr, wired.now, contacted=True)
    a.store.close()
    del wired.nodes[a.addr]
    wired.now += 3.0
    again = wired.node("a", "127.0.0.1:41004")
    again.peers.add_seed(c.addr)
    try:
        again.replicator.sessions += 1
        assert not again.caught_up()
        await wired.rounds(1, again)  # (its old address is called as the clock moves 1 s)
        assert not again.caught_up() and again.failed is None
        wired.now += 2.0  # (_TWIN_ANSWER)
        assert again.caught_up()
        same = wired.node("c2", "127.0.0.1:41005")  # no old address to call: 2 s after
        same.peers.add_seed(c.addr)  # the first answer, for a twin's call back
        same.replicator.sessions += 1
        await wired.rounds(1, same)
        assert not same.caught_up()
        wired.now += 1.0
        assert same.caught_up()
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_seed_that_never_answers_does_not_hold_up_the_others_gossip(
    tmp_path: Path,
) -> None:
    """Seeds were called in turn: a --join seed that accepts and never answers held the
    round, and the first answer a peer waits for before it is caught up, for the request
    timeout (10 s; a review of the fix above)."""
    wired = _Wired(tmp_path)
    joiner = wired.node("j", "127.0.0.1:41010")
    live = wired.node("l", "127.0.0.1:41011", joiner.key.to_text())
    answering = joiner.membership.client.call
    dead = asyncio.Event()

    async def call(addr: str, *args: Any, **kwargs: Any) -> Any:
        if addr == "127.0.0.1:9":
            await dead.wait()  # (until the test lets it fail)
            raise PeerUnreachable("no answer from 127.0.0.1:9")
        return await answering(addr, *args, **kwargs)

    joiner.membership.client.call = call  # type: ignore[method-assign]
    for seed in ("127.0.0.1:9", live.addr):
        joiner.peers.add_seed(seed)
    try:
        round_ = asyncio.ensure_future(joiner._gossip())
        for _ in range(100):  # (bounded)
            await asyncio.sleep(0)
        assert joiner.node_id in live.peers and not round_.done()  # (while one hangs)
        assert joiner.membership._gossip_answered_at == wired.now
        dead.set()
        await round_
    finally:
        wired.close()


def test_of_two_twins_the_younger_stops_and_only_once() -> None:
    """Both twins pick the same one to stop, whichever hears the other first, whatever their
    wall clocks say (by start times read on them, a clock behind or stepped by NTP after the
    start picked the original); a request that waited in the sockets is that much older
    (read as fresh, the younger twin took the elder for the younger; a review of the
    session's fixes). A twin's token is never this process's own, and a request without one
    (an older peer, the CLI) is none."""
    elder, younger = TwinWatch(100.0, b"\x00" * 8), TwinWatch(105.0, b"\xff" * 8)
    assert not elder.is_twin(elder.token) and not elder.is_twin(None)
    assert elder.is_twin(younger.token) and younger.is_twin(elder.token)
    now = 200.0
    assert not elder.stops_for(younger.token, younger.age(now), 0.0, now)  # it calls back
    # The elder's call back read 8 s late (the younger was held): 8 s older than it says,
    # and read as fresh, younger than the younger.
    assert not younger.stops_for(elder.token, elder.age(now - 8.0), 0.0, now)
    assert younger.stops_for(elder.token, elder.age(now - 8.0), 8.0, now)
    assert not younger.stops_for(elder.token, elder.age(now), 0.0, now)  # (once)
    # Twins of one age (started at one moment): the tokens decide, the same way on both.
    a, b = TwinWatch(100.0, b"\x01" * 8), TwinWatch(100.0, b"\x02" * 8)
    assert a.stops_for(b.token, b.age(now), 0.0, now) != b.stops_for(a.token, a.age(now), 0.0, now)


def test_an_address_is_called_again_soon_per_process_there() -> None:
    watch = TwinWatch(1000.0, b"\x00" * 8)
    assert watch.should_call("127.0.0.1:1", None, 5.0)
    assert not watch.should_call("127.0.0.1:1", None, 14.9)
    assert watch.should_call("127.0.0.1:1", b"t" * 8, 6.0)  # a new process there: at once
    assert watch.should_call("127.0.0.1:1", None, 15.0)
