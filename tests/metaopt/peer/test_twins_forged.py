"""Twin news that no twin sent: a peer of the cluster whose answers or gossip speak of this
node's id where no copy of it runs (a bug, or a lie) makes no false line and no flood of calls.

Found by a wire review with the cluster's key: a peer answering every call with "twin stops"
had every caller say, again at each new token, that a twin of its own had stopped (28 false
lines in 3.5 minutes), and one gossip listing this node's id at 256 addresses had 256 calls
made at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node
from metaopt.peer._wire import TWIN_STOPS

pytestmark = pytest.mark.integration  # (a Node opens its replica; no socket is called)

ADDR = "127.0.0.1:7009"
SAID = "another peer ran with this peer's node id"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    now = [1000.0]
    made = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    yield made
    made.membership._twin_calls = 0
    asyncio.run(made.stop())


def _calls(node: Node) -> list[Any]:
    spawned: list[Any] = []

    def spawn(coro: Any) -> None:
        spawned.append(coro)
        coro.close()  # (not run: its count of calls under way stays up, as while they run)

    node.membership._spawn = spawn  # type: ignore[assignment]
    return spawned


@pytest.mark.parametrize("to", [None, "own", "other"])
def test_a_twin_stopped_is_said_only_of_a_call_that_could_reach_a_twin(
    node: Node, caplog: pytest.LogCaptureFixture, to: str | None
) -> None:
    named = {None: None, "own": node.node_id, "other": b"\x01" * 16}[to]
    with caplog.at_level("WARNING", logger="metaopt.peer"):
        for token in ("aa" * 8, "bb" * 8):  # (a new token each answer: said per process)
            node.membership.note_refusal(ADDR, f"{ADDR}: {TWIN_STOPS} {token} it stops", named)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(SAID)]
    assert len(said) == (0 if to == "other" else 2)


def test_one_gossip_naming_this_node_at_many_addresses_has_a_few_calls_made(
    node: Node,
) -> None:
    spawned = _calls(node)
    for port in range(1000, 1256):
        node.membership.maybe_twin_at(f"127.0.0.2:{port}", 0.0)
    assert len(spawned) == 8
    node.membership._twin_calls = 0  # (those calls ended)
    node.membership.maybe_twin_at("127.0.0.2:2000", 0.0)
    assert len(spawned) == 9  # (an address left out is called when heard of again)


def test_no_call_is_made_to_an_address_no_url_can_be_made_of(node: Node) -> None:
    spawned = _calls(node)
    node.membership.maybe_twin_at("127.0.0.1:not an addr \x00", 0.0)
    node.membership.maybe_twin_at("127.0.0.1:7010", 0.0)
    assert len(spawned) == 1


def test_a_token_longer_than_any_process_token_is_not_kept(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """Kept by every peer told of it, a token of megabytes changing at each answer grew a
    peer by 170 MB in 2 minutes."""
    with caplog.at_level("WARNING", logger="metaopt.peer"):
        node.membership.note_refusal(ADDR, f"{ADDR}: {TWIN_STOPS} {'ab' * 33} it stops", None)
    assert SAID not in caplog.text and not node.twins._stopped


def test_the_twin_tokens_remembered_are_bounded() -> None:
    """Forged requests under this node's id, each with a token of its own, were all kept
    for the peer's life without the cap (a mutation audit)."""
    from metaopt.peer._twins import _MAX_CALLED, TwinWatch

    watch = TwinWatch(0.0, b"me")
    for i in range(_MAX_CALLED * 4):
        assert watch.first_heard(b"forged-%d" % i) and watch.first_stopped(b"forged-%d" % i)
    assert len(watch._heard) <= _MAX_CALLED and len(watch._stopped) <= _MAX_CALLED
