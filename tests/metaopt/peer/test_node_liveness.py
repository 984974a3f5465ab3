"""A peer counts another live only on its own answer: a gossip entry naming a gone node at
an alias of this peer's own address (localhost:PORT for a peer bound to 127.0.0.1) made the
peer call itself, take its own answer for the gone node's, and keep it live for good, so the
gone node's running trial was never taken for lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import FrameCodec, Record
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node
from metaopt.peer._transport import Client, OtherRelease, PeerUnreachable, Refused
from metaopt.peer._wire import Request

pytestmark = pytest.mark.integration

FAST = Timing(peer_timeout=2.0, gossip=0.3, anti_entropy=1.0, lost_after=3.0, schedule=0.1)


def _experiment() -> Record:
    body = {
        "name": "e", "space": {"x": "uniform(0, 1)"}, "objectives": ["objective"],
        "directions": ["minimize"], "algorithm": "random", "max_trials": 1,
        "command": ["true"], "bundle": {"shared_dir": "/tmp"}, "objective_regex": None,
        "early_stopping": None, "max_step": None, "nonce": "n", "options": {},
    }  # fmt: skip
    return Record.create("experiment", os.urandom(16), 1, 1000, body)


@pytest.mark.asyncio
async def test_a_peer_found_live_is_said_so_while_the_rounds_calls_still_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The round's calls end together: one address that never answers held its lines for
    # the request timeout (10 s late, after "caught up with" that very peer; a namespace run).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    answer = asyncio.Event()

    async def call(addr: str, op: str, body: Any = None, to: Any = None) -> Any:
        await answer.wait()  # (a peer that does not answer, until the test ends)
        raise PeerUnreachable(f"{addr}: no answer")

    node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
    node.peers.add(b"\x01" * 16, "127.0.0.1:9", mono[0], contacted=True)
    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            round_ = asyncio.ensure_future(node.membership.gossip_round())
            await asyncio.sleep(0.05)
            assert not round_.done()
            assert "peer 01010101 at 127.0.0.1:9 is live" in caplog.messages
            answer.set()
            await round_
    finally:
        await node.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("alias", ["127.0.0.1:{port}", "localhost:{port}"])
async def test_a_gone_peers_trial_is_lost_whatever_address_gossip_gave_it(
    tmp_path: Path, alias: str
) -> None:
    node = Node(PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, timing=FAST))
    await node.start()
    gone = os.urandom(16)  # a peer that crashed while running a trial
    client = Client(FrameCodec([node.key]), os.urandom(16), "")
    try:
        exp = _experiment()
        trial = Record.create(
            "trial", gone, 1, 2000, {"params": {"x": 0.5}, "node": gone, "counter": 1}, [exp.key]
        )
        started = Record.create("event", gone, 2, 2001, {"kind": "started", "node": gone},
                                [trial.key, exp.key])  # fmt: skip
        node.store.add([exp, trial, started])
        # One gossip message, from a peer with the key (buggy or not), then silence.
        entry = [gone, alias.format(port=node.port), 0.0]
        await client.call(node.addr, "gossip", [entry])
        state = None
        for _ in range(150):  # 15 s: peer_timeout + lost_after is 5 s
            await asyncio.sleep(0.1)
            view = node.replica.experiments[exp.key].trial(trial.key)
            state = view.state if view else None
            if state != "running":
                break
        live = [p.addr for p in node.peers.live(node.monotonic(), FAST.peer_timeout)]
        assert state != "running", f"still running after 15 s; peers counted live: {live}"
    finally:
        await client.close()
        await node.stop()


@pytest.mark.asyncio
async def test_a_call_refused_by_another_node_at_a_known_address_introduces_this_peer(
    tmp_path: Path,
) -> None:
    # A peer restarted on its address with a new data directory knows nobody; calls naming
    # its predecessor are refused there, and without a call naming nobody neither peer heard
    # of the other until the predecessor's entry expired (10 minutes).
    caller = Node(PeerConfig(data_dir=tmp_path / "a", port=0, mdns=False, timing=FAST))
    key = caller.key.to_text()
    restarted = Node(
        PeerConfig(data_dir=tmp_path / "b", port=0, mdns=False, timing=FAST, key_text=key)
    )
    await caller.start()
    await restarted.start()
    try:
        predecessor = os.urandom(16)
        caller.peers.add(predecessor, restarted.addr, caller.monotonic(), contacted=True)
        await caller.membership._gossip_with(restarted.addr, FAST.peer_timeout)
        assert predecessor not in caller.peers
        assert caller.node_id in restarted.peers
    finally:
        await caller.stop()
        await restarted.stop()


def _still_clock_nodes(tmp_path: Path, now: float) -> Callable[..., Node]:
    """A maker of nodes in tmp_path/NAME (with the cluster key given) whose clocks stand at
    now: only what the nodes say to each other moves them."""

    def node(name: str, key: str | None = None) -> Node:
        config = PeerConfig(data_dir=tmp_path / name, port=0, mdns=False, key_text=key)
        return Node(config, clock=lambda: now, monotonic=lambda: now)

    return node


@pytest.mark.asyncio
async def test_a_peer_back_within_a_round_of_its_leave_is_said_to_be_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer stop then start took less than a gossip round (5 s): its return left the
    # others' logs unchanged, their last word on it that it left (a membership review).
    now = time.time()
    node = _still_clock_nodes(tmp_path, now)

    a = node("a")
    b = node("b", a.key.to_text())
    running = [a, b]
    short = a.node_id.hex()[:8]
    try:
        await a.start()
        await b.start()
        b.peers.add(a.node_id, a.addr, now, contacted=True)
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await b._gossip()  # "peer A is live"
            caplog.clear()
            running.remove(a)
            await a.stop()  # peer stop: "peer A is leaving"
            restarted = node("a")  # peer start, on the same data directory
            running.append(restarted)
            await restarted.start()
            await restarted.client.call(b.addr, "gossip", [])  # its first round calls b
            assert b.is_alive(a.node_id)
            await b._gossip()  # b's next round
        said = [r.getMessage() for r in caplog.records if short in r.getMessage()]
        assert said[0] == f"peer {short} is leaving"
        # b counts A live, but its log's last word on A is that it left.
        assert any("live again" in line for line in said), said
    finally:
        for peer in running:
            await peer.stop()


@pytest.mark.asyncio
async def test_a_node_replaced_at_its_address_is_not_said_to_be_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The old node, dropped at once when another node answered at its address, was said to
    # be gone after "nothing heard of it for 30 s", heard of a moment ago (a membership review).
    now = time.time()
    node = _still_clock_nodes(tmp_path, now)

    a = node("a")
    new = node("new", a.key.to_text())  # restarted with a new data directory...
    try:
        await a.start()
        await new.start()
        old = os.urandom(16)  # ...where this node answered a moment ago
        a.peers.add(old, new.addr, now, contacted=True)
        short = old.hex()[:8]
        with caplog.at_level("INFO", logger="metaopt.peer"):
            a.membership._say_liveness(now, a.config.timing.peer_timeout)
            caplog.clear()
            await a._gossip()  # no time passes
        said = [r.getMessage() for r in caplog.records if short in r.getMessage()]
        assert not any("nothing heard of it" in line for line in said), said
        assert any("another node is at its address now" in line for line in said), said
        # The new node's refusal of a call naming its predecessor is routine: no warning.
        [refusal] = [r for r in caplog.records if "the request was for" in r.getMessage()]
        assert refusal.levelname == "INFO"
    finally:
        await a.stop()
        await new.stop()


def _held_node(tmp_path: Path, mono: list[float], timing: Timing = FAST) -> Node:
    """A node whose monotonic clock is mono[0] (started by the caller)."""
    config = PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, timing=timing)
    return Node(config, monotonic=lambda: mono[0])


@contextlib.asynccontextmanager
async def _started_held_node(
    tmp_path: Path, timing: Timing = FAST
) -> AsyncIterator[tuple[Node, list[float]]]:
    """A started node (see _held_node) and its monotonic clock, stopped after."""
    mono = [1000.0]
    node = _held_node(tmp_path, mono, timing)
    await node.start()
    try:
        yield node, mono
    finally:
        await node.stop()


DEFAULT = Timing()  # peer_timeout 30 s


@pytest.mark.asyncio
async def test_what_waited_in_a_peers_sockets_through_a_pause_is_as_old_as_its_wait(
    tmp_path: Path,
) -> None:
    # Requests that waited in its sockets through a pause are handled as it resumes: their
    # gossip and their senders' contact read as news of now (see test_node_paused). A
    # request's lag is its sender's clock offset (here a minute behind) and its time in
    # flight, plus any wait; only the wait beyond the sender's usual lag ages it.
    async with _started_held_node(tmp_path) as (node, mono):
        dead, sender = os.urandom(16), os.urandom(16)

        async def gossip(lag: float, entries: list[list[object]]) -> None:
            request = Request("gossip", sender, "127.0.0.1:9", entries, lag=lag)
            await node._on_gossip(request)

        await gossip(60.1, [])
        await gossip(60.3, [])  # (jitter: news of now)
        assert node.peers.get(sender).heard == 1000.0  # type: ignore[union-attr]
        mono[0] += 8.0  # paused 8 s; this waited through it
        await gossip(68.1, [[dead, "127.0.0.1:8", 0.5]])
        heard = {p.node_id: p.heard for p in node.peers.all()}
        # As of the pause's start (less the jitter its usual lag took in).
        assert heard == pytest.approx({dead: 1000.0 - 0.5, sender: 1000.0}, abs=0.05)
        mono[0] += 1.0  # sent since the pause ended: news of now, for all it came so soon
        await gossip(60.1, [])
        assert node.peers.get(sender).heard == mono[0]  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_gossip_reply_that_waited_through_a_hold_is_as_old_as_the_call(
    tmp_path: Path,
) -> None:
    # The reply to this peer's own gossip call, read after a hold of its loop, was news of
    # now as well: a peer dead since the hold began was heard of a moment ago (a review of
    # the session's fixes).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    dead, partner = os.urandom(16), os.urandom(16)
    node.peers.add(partner, "127.0.0.1:9", mono[0], contacted=True)

    async def call(addr: str, op: str, body: Any, to: bytes | None = None) -> Any:
        mono[0] += 8.0  # the reply came at once; the loop was held 8 s before reading it
        return [[dead, "127.0.0.1:8", 0.5]]

    real, node.membership.client = node.membership.client, SimpleNamespace(call=call)  # type: ignore[assignment]
    try:
        await node.membership._gossip_with("127.0.0.1:9", FAST.peer_timeout)
        heard = {p.node_id: p.heard for p in node.peers.all()}
        assert heard == {dead: 1000.0 - 0.5, partner: 1000.0}
    finally:
        node.membership.client = real
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_whose_entry_expired_is_not_said_to_be_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An entry the table dropped for silence (unheard of for expire_after, 600 s, after a
    # long pause such as a Ctrl-Z'd `peer start`) was said to be replaced by another node at
    # its address, as one dropped for another there is (a review of the session's fixes).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    dead, live = os.urandom(16), os.urandom(16)
    node.peers.add(dead, "127.0.0.1:8", mono[0], contacted=True)
    node.peers.add(live, "127.0.0.1:9", mono[0], contacted=True)
    try:
        node.membership._say_liveness(mono[0], FAST.peer_timeout)
        mono[0] += 700.0  # the process was stopped 700 s; then its gossip round
        node.peers.answered(live, mono[0])  # the live peer answers (the table expires entries)
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
        said = [r.getMessage() for r in caplog.records if dead.hex()[:8] in r.getMessage()]
        assert said and not any("another node is at its address" in s for s in said), said
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_flood_of_peers_heard_of_is_told_in_a_few_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer gossiping 1,020 made-up ids as live wrote "is live" and "counted gone" for each
    # in every peer's log, 7,407 lines in minutes (a review). A peer only heard of is news
    # all the same (a new peer joined through another one is live for this one too).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    flood = [[os.urandom(16), f"127.1.{i >> 8}.{i & 255}:9", 0.0] for i in range(1, 201)]
    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.peers.merge_gossip(flood[:3], mono[0])
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
            said = [r.getMessage() for r in caplog.records]
            assert sum(" is live" in s for s in said) == 3  # (a few: each named)
            caplog.clear()
            node.peers.merge_gossip(flood[3:], mono[0])
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
            said = [r.getMessage() for r in caplog.records]
            assert sum(" is live" in s for s in said) == 8
            assert "189 more peers live (not named)" in said
            caplog.clear()
            mono[0] += FAST.peer_timeout + 1  # all silent since
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
            said = [r.getMessage() for r in caplog.records]
            assert len(said) == 9 and "192 more peers gone (not named)" in said
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_queued_requests_of_one_sender_after_a_pause_do_not_ratchet_its_usual_lag(
    tmp_path: Path,
) -> None:
    # A sender calls this peer once a second (gossip, anti-entropy, pushes); this peer is
    # paused 40 s (SIGSTOP, a long fold). D dies 5 s into the pause; the sender, which counts
    # D gone only 30 s later, names it in the requests it sends meanwhile. On resuming this
    # peer handles the 40 queued requests, oldest first. D has truly been silent 35 s. A usual
    # lag that crept up with each of them read the later ones as fresh (a review of the
    # session's fixes).
    async with _started_held_node(tmp_path, DEFAULT) as (node, mono):
        sender, dead = os.urandom(16), os.urandom(16)
        offset = 0.1  # clock offset + time in flight
        await node._on_gossip(Request("gossip", sender, "127.0.0.1:9", [], lag=offset))
        pause, died = 40.0, 5.0
        mono[0] += pause
        read_live = []
        for i in range(int(pause)):  # sealed at t = i s into the pause
            t = float(i)
            entries = [[dead, "127.0.0.1:8", t - died]] if died <= t < died + 30 else []
            request = Request("gossip", sender, "127.0.0.1:9", entries, lag=offset + pause - t)
            await node._on_gossip(request)
            if node.is_alive(dead):
                read_live.append(i)
        assert not read_live, (
            f"D, silent {pause - died:g} s, read live after queued requests {read_live}"
            f" ({len(read_live)} of {int(pause)})"
        )


@pytest.mark.asyncio
async def test_a_senders_first_request_after_a_pause_is_as_old_as_its_wait(
    tmp_path: Path,
) -> None:
    # This peer is paused 40 s right after it started (a catch-up fold of a long history,
    # a Ctrl-Z): a sender it never heard from before (just joined, or this peer just
    # restarted) sent gossip naming D, which died as the pause began. The first request of a
    # sender set its usual lag, so its wait counted as the sender's clock offset (a review
    # of the session's fixes).
    async with _started_held_node(tmp_path, DEFAULT) as (node, mono):
        sender, dead = os.urandom(16), os.urandom(16)
        node._watching, node._last_tick = True, mono[0]  # (its watcher looked just now)
        mono[0] += 40.0
        request = Request("gossip", sender, "127.0.0.1:9", [[dead, "127.0.0.1:8", 0.1]],
                          lag=0.1 + 40.0)  # fmt: skip
        await node._on_gossip(request)
        heard = node.peers.get(dead)
        assert heard is None or not node.is_alive(dead), (
            f"D, silent 40 s, read as heard {mono[0] - heard.heard:.1f} s ago"
        )


@pytest.mark.asyncio
async def test_an_anti_entropy_answer_that_waited_through_a_hold_is_as_old_as_the_call(
    tmp_path: Path,
) -> None:
    # As for a gossip reply, for the other call a peer makes every 2 s: the partner's last
    # sync reply came at once, and this peer's loop was held 8 s before reading it; the
    # partner died as the hold began (a review of the session's fixes).
    mono = [1000.0]
    node = _held_node(tmp_path, mono, Timing(peer_timeout=2.0, gossip=0.3, anti_entropy=1.0))
    partner = os.urandom(16)
    node.peers.add(partner, "127.0.0.1:9", mono[0], contacted=True)

    async def reconcile(addr: str, *, to: bytes | None = None) -> bool:
        node.replicator._called[addr] = mono[0]  # (its last call, answered at once)
        mono[0] += 8.0
        return True

    node.replicator.reconcile = reconcile  # type: ignore[method-assign]
    try:
        assert await node.replicator.anti_entropy_once() == "127.0.0.1:9"
        heard = node.peers.get(partner)
        assert heard is not None and heard.heard == 1000.0, (
            f"the partner, silent 8 s, read as heard {mono[0] - heard.heard:g} s ago"
        )
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_first_heard_during_a_hold_that_calls_every_second_reads_live(
    tmp_path: Path,
) -> None:
    # Its first request, sealed 35 s into a 40 s hold, set its usual lag 35 s too low for
    # four minutes: it read silent at 120 of 120 looks (a review of the session's fixes).
    async with _started_held_node(tmp_path, DEFAULT) as (node, mono):  # peer_timeout 30 s
        sender = os.urandom(16)
        node._watching, node._last_tick = True, mono[0]  # (its watcher looked just now)
        mono[0] += 40.0  # held 40 s (SIGSTOP, a long fold)
        # S's first call, sealed 35 s into the hold (S started then), read as the hold ends.
        await node._on_gossip(Request("gossip", sender, "127.0.0.1:9", [], lag=0.1 + 5.0))
        node._last_tick = mono[0]
        silent = []
        for second in range(1, 121):  # then S calls once a second, each read at once
            mono[0] += 1.0
            node._last_tick = mono[0]  # (the watcher ticks on)
            await node._on_gossip(Request("gossip", sender, "127.0.0.1:9", [], lag=0.1))
            if not node.is_alive(sender):
                silent.append(second)
        assert not silent, (
            f"a peer calling every second read silent (> 30 s) at {len(silent)} of 120 looks"
            f" (seconds {silent[0]}..{silent[-1]})"
        )


@pytest.mark.asyncio
async def test_a_senders_stamps_are_read_by_this_peers_clock_through_its_requests_lag(
    tmp_path: Path,
) -> None:
    """The failure back-off reads another node's end stamps moved by that node's clock offset
    as its requests tell it (RequestLags.offset through Node._clock_offset_ms): a node whose
    clock runs 90 s ahead sends requests of lag -90 s, and its end stamped now + 90 s reads as
    now. Of the wrong sign, or left out, its failures followed every later completion."""
    async with _started_held_node(tmp_path, DEFAULT) as (node, _):
        ahead = os.urandom(16)
        await node._on_gossip(Request("gossip", ahead, "127.0.0.1:9", [], lag=-90.0))
        now_ms = int(node.clock() * 1000)
        ended = SimpleNamespace(
            key=os.urandom(32), ended_at=now_ms + 90_000, runner=ahead, node=ahead
        )
        end = node._ended_here(now_ms + 5_000)(ended)  # type: ignore[arg-type]
        assert abs(end - now_ms) <= 50, end - now_ms  # (its arrival, 5 s on, is later)
        assert node._clock_offset_ms(node.node_id) == 0


@pytest.mark.asyncio
async def test_a_peer_back_on_another_port_within_the_timeout_is_told_at_its_new_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer restarted on a new port within the peer timeout was neither gone nor back: the
    # other peers' logs named it only at its old address (a soak review).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    moving = os.urandom(16)
    try:
        node.peers.add(moving, "127.0.0.1:9001", mono[0], contacted=True)
        node.membership._say_liveness(mono[0], FAST.peer_timeout)
        mono[0] += 1.0
        node.peers.add(moving, "127.0.0.1:9002", mono[0], contacted=True)
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
            node.membership._say_liveness(mono[0] + 0.5, FAST.peer_timeout)  # said once
        said = [r.getMessage() for r in caplog.records]
        assert said == [f"peer {moving.hex()[:8]} is at 127.0.0.1:9002 now (was at 127.0.0.1:9001)"]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_restarted_back_on_its_first_port_is_told_there_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 17982 -> 17983 -> 17982 within the timeout: the return was not told (a review, 2 of
    # 2), since a move back to an address told before was taken for a peer known at two
    # addresses. The token each run's requests carry tells the two apart.
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    moving = os.urandom(16)
    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            for port, run in [(9001, b"run1"), (9002, b"run2"), (9001, b"run3")]:
                mono[0] += 1.0
                request = Request("gossip", moving, f"127.0.0.1:{port}", [], run=run)
                node.membership.contact(request)
                node.membership._say_liveness(mono[0], FAST.peer_timeout)
        said = [r.getMessage() for r in caplog.records]
        short = moving.hex()[:8]
        assert said == [
            f"peer {short} at 127.0.0.1:9001 is live",
            f"peer {short} is at 127.0.0.1:9002 now (was at 127.0.0.1:9001)",
            f"peer {short} is at 127.0.0.1:9001 now (was at 127.0.0.1:9002)",
        ]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_that_refuses_this_one_is_said_to_where_it_is_counted_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer whose clock stepped off (or of another release) answers every call with a
    # refusal: it was counted gone, and its trials re-run, with no word of why, and a peer
    # whose remembered peers all refused it was told to restart with --join (two reviews).
    mono = [1000.0]
    node = _held_node(tmp_path, mono)
    refusing, addr = os.urandom(16), "127.0.0.1:9003"
    why = "StaleFrame: the sender's clock is +600.0 s off the receiver's (window ±120 s)"
    answers: list[Exception | None] = [Refused(f"{addr} refused us: {why}")]

    async def call(to_addr: str, op: str, body: Any, to: Any = None) -> Any:
        if answers[0] is not None:
            raise answers[0]
        return []

    node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
    try:
        node.peers.add(refusing, addr, mono[0], contacted=True)
        node.membership._say_liveness(mono[0], FAST.peer_timeout)
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        assert node.membership.refusals() == {addr: why}
        node.membership._recalled = [addr]
        hint = node.membership._refused_why(*node.membership._recalled)
        assert hint == f"; {addr} refused this peer: {why}"
        mono[0] += FAST.peer_timeout + 1
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.membership._say_liveness(mono[0], FAST.peer_timeout)
        [gone] = [r.getMessage() for r in caplog.records]
        assert gone.startswith(f"peer {refusing.hex()[:8]} at {addr}: nothing heard of it")
        assert gone.endswith(f"s){hint}")
        # Of another release, then silent, then answering: each time as it is now.
        answers[0] = OtherRelease(f"{addr}: metaopt protocol version 7 against version 8 here")
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        assert node.membership.refusals() == {
            addr: "metaopt protocol version 7 against version 8 here"
        }
        answers[0] = PeerUnreachable(f"no answer from {addr} (TimeoutError)")
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        assert node.membership.refusals() == {}
        answers[0] = Refused(f"{addr} refused us: {why}")
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        answers[0] = None
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        assert node.membership.refusals() == {}
        # Forgotten (expired from the table) and stopped: no longer listed as refusing.
        answers[0] = Refused(f"{addr} refused us: {why}")
        await node.membership._gossip_with(addr, FAST.peer_timeout)
        assert node.membership.refusals() == {addr: why}
        node.peers.expire(mono[0] + 10_000.0)
        node.membership._recalled = []
        assert node.membership.refusals() == {}
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_whose_mdns_neighbours_are_all_ignored_is_told_why_not_to_join(
    tmp_path: Path,
) -> None:
    # "no other peer known (mDNS found none on this interface); ... --join" to a peer whose
    # neighbours all ran an older release (an upgrade review): they were found, and ignored.
    node = Node(PeerConfig(data_dir=tmp_path / "n", port=0, mdns=True, timing=FAST))
    try:
        assert "mDNS found none on this interface" in (node.membership.alone_hint() or "")
        node.membership.mdns_ignored = lambda: ["release"]
        assert node.membership.alone_hint() == (
            "no other peer known: mDNS found only peers of another metaopt release, which this"
            " peer ignores (see its log); upgrade every peer to the same release"
        )
        # (Not "start it with their key" to a peer with the key: a review of the first hint.)
        node.membership.mdns_ignored = lambda: ["release", "cluster"]
        assert node.membership.alone_hint() == (
            "no other peer known: mDNS found only peers of another metaopt release and another"
            " cluster, which this peer ignores (see its log); upgrade every peer to the same"
            " release; to join it, start this peer with its key"
        )
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_join_seed_of_another_release_is_not_said_to_be_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "--join ADDR does not answer (...protocol version 7 against version 8...)" contradicted
    # the refusal said just before, and `peer status` (a review).
    config = PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, timing=FAST)
    node = Node(config)
    seed = "127.0.0.1:9004"
    node.peers.add_seed(seed)

    async def call(to_addr: str, op: str, body: Any, to: Any = None) -> Any:
        raise OtherRelease(f"{to_addr}: metaopt protocol version 7 against version 8 here")

    node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            await node.membership._gossip_with(seed, FAST.peer_timeout)
        assert not [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert node.membership.refusals() == {
            seed: "metaopt protocol version 7 against version 8 here"
        }
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_paused_past_the_timeout_does_not_log_the_others_gone_as_it_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every peer looked silent through its own pause: its log counted each "gone", and "live
    # again" a moment later, as if they had dropped out (a walkthrough, 4 of 4 pauses).
    async with _started_held_node(tmp_path, DEFAULT) as (node, mono):
        partner = os.urandom(16)

        async def call(addr: str, op: str, body: Any = None, to: Any = None) -> Any:
            return []  # (it answers: it was live all along)

        node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.peers.add(partner, "127.0.0.1:9", mono[0], contacted=True)
            await asyncio.sleep(0.05)  # (its watch for holds of its loop under way)
            await node.membership.gossip_round()
            mono[0] += 40.0  # this peer's loop held 40 s (SIGSTOP, a paused VM)
            await node.membership.gossip_round()
        said = [m for m in caplog.messages if m.startswith(f"peer {partner.hex()[:8]}")]
        assert said == [f"peer {partner.hex()[:8]} at 127.0.0.1:9 is live"]
        assert node.is_alive(partner)


@pytest.mark.asyncio
async def test_a_peer_heard_of_only_through_others_is_said_live_as_status_says_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A restarted peer logged a peer killed -9 seconds before as "live", first of all, on
    # another's word; `peer status` said "yes (heard of through other peers)" (a walkthrough).
    mono = [1000.0]
    node = _held_node(tmp_path, mono, DEFAULT)
    partner, dead = os.urandom(16), os.urandom(16)
    node.peers.add(partner, "127.0.0.1:9", mono[0], contacted=True)

    async def call(addr: str, op: str, body: Any = None, to: Any = None) -> Any:
        return [[dead, "127.0.0.1:8", 3.0]] if addr == "127.0.0.1:9" else []

    node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            await node.membership.gossip_round()
        said = [m for m in caplog.messages if " is live" in m]
        assert sorted(said) == sorted([
            f"peer {partner.hex()[:8]} at 127.0.0.1:9 is live",
            f"peer {dead.hex()[:8]} at 127.0.0.1:8 is live (heard of through other peers)",
        ])  # fmt: skip
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_round_under_way_as_its_peer_is_paused_does_not_log_the_others_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its calls waited on an address that never answers as the pause began; ended after it,
    # the round counted every live peer gone, "live again" a round later (a review, 3 of 3).
    async with _started_held_node(tmp_path, DEFAULT) as (node, mono):
        partner = os.urandom(16)
        answer = asyncio.Event()

        async def call(addr: str, op: str, body: Any = None, to: Any = None) -> Any:
            await answer.wait()
            return []

        node.membership.client = SimpleNamespace(call=call)  # type: ignore[assignment]
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            node.peers.add(partner, "127.0.0.1:9", mono[0], contacted=True)
            await asyncio.sleep(0.05)  # (its watch for holds of its loop under way)
            round_ = asyncio.ensure_future(node.membership.gossip_round())
            await asyncio.sleep(0.05)
            mono[0] += 40.0  # held 40 s while the round's calls waited
            answer.set()
            await round_
            await node.membership.gossip_round()  # (begun after the hold: its answers count)
        said = [m for m in caplog.messages if m.startswith(f"peer {partner.hex()[:8]}")]
        assert said == [f"peer {partner.hex()[:8]} at 127.0.0.1:9 is live"]
        assert node.is_alive(partner)
