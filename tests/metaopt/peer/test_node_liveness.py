"""A peer counts another live only on its own answer: a gossip entry naming a gone node at
an alias of this peer's own address (localhost:PORT for a peer bound to 127.0.0.1) made the
peer call itself, take its own answer for the gone node's, and keep it live for good, so the
gone node's running trial was never taken for lost."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crdt import FrameCodec, Record
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node
from metaopt.peer._transport import Client

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
        await caller._gossip_with(restarted.addr, FAST.peer_timeout)
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
            a._say_liveness(now, a.config.timing.peer_timeout)
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


@pytest.mark.asyncio
async def test_what_a_peer_hears_right_after_its_loop_was_held_is_as_old_as_the_hold(
    tmp_path: Path,
) -> None:
    # Requests that waited in its sockets through a pause are handled as it resumes: their
    # gossip and their senders' contact read as news of now (see test_node_paused).
    from metaopt.peer._wire import Request

    mono = [1000.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, timing=FAST),
        monotonic=lambda: mono[0],
    )
    await node.start()
    try:
        node._watching, node._last_tick = True, mono[0]  # (its watcher looked just now)
        dead, sender = os.urandom(16), os.urandom(16)
        mono[0] += 8.0  # paused (SIGSTOP) for 8 s
        request = Request("gossip", sender, "127.0.0.1:9", [[dead, "127.0.0.1:8", 0.5]])
        await node._on_gossip(request)
        heard = {p.node_id: p.heard for p in node.peers.all()}
        assert heard == {dead: 1000.0 - 0.5, sender: 1000.0}  # as of the pause's start
        mono[0] += 5.0  # running since (its watcher looking every second): news of now again
        node._last_tick = mono[0]
        await node._on_gossip(Request("gossip", sender, "127.0.0.1:9", []))
        assert node.peers.get(sender).heard == mono[0]  # type: ignore[union-attr]
    finally:
        await node.stop()
