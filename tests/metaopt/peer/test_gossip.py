"""The peer table: liveness from contact and gossip ages, expiry, seeds, untrusted gossip."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaopt.peer._gossip import LivenessNews, PeerTable, PeerTableConfig, own_addresses

A, B, C, D = (bytes([i]) * 16 for i in range(1, 5))
TIMEOUT = 30.0


def test_a_contacted_peer_is_live_until_the_timeout_passes() -> None:
    table = PeerTable()
    table.add(A, "10.0.0.1:7787", 100.0, contacted=True)
    assert table.is_alive(A, 130.0, TIMEOUT)
    assert not table.is_alive(A, 130.5, TIMEOUT)
    peer = table.get(A)
    assert peer is not None and peer.last_contact == 100.0


def test_an_answer_to_a_call_naming_a_peer_refreshes_it() -> None:
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=False)
    assert table.at("h:1") == A and table.at("unknown:2") is None
    table.answered(A, 25.0)
    peer = table.get(A)
    assert peer is not None and (peer.heard, peer.last_contact) == (25.0, 25.0)
    assert table.is_alive(A, 50.0, TIMEOUT)


def test_a_node_another_answered_for_is_forgotten_at_that_address_only() -> None:
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(B, "h:2", 0.0, contacted=True)
    table.forget_at("h:2", A)  # A is not at h:2: nothing known of A changes
    table.forget_at("h:1", None)
    assert table.at("h:1") == A and table.at("h:2") == B
    table.forget_at("h:1", A)
    assert table.get(A) is None and table.at("h:1") is None and table.get(B) is not None


def test_seeds_are_kept_forever_and_once() -> None:
    table = PeerTable(PeerTableConfig(expire_after=10.0))
    table.add_seed("s:1")
    table.add_seed("s:1")
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(B, "h:2", 1000.0, contacted=True)  # expires A on the way
    assert table.seed_addrs() == ["s:1"]
    assert table.get(A) is None and table.get(B) is not None


def test_gossip_carries_ages_so_a_second_hand_entry_is_never_fresher() -> None:
    alice, bob = PeerTable(), PeerTable()
    alice.add(C, "h:3", 100.0, contacted=True)
    # Bob's clock is 1000 s ahead of Alice's; ages make that irrelevant.
    bob.merge_gossip(alice.to_gossip(110.0, TIMEOUT), 1110.0, exclude=B)
    peer = bob.get(C)
    assert peer is not None
    assert peer.heard == pytest.approx(1100.0)
    assert peer.last_contact is None
    # Echoing the entry back does not refresh it at Alice.
    alice.merge_gossip(bob.to_gossip(1120.0, TIMEOUT), 120.0, exclude=A)
    back = alice.get(C)
    assert back is not None and back.heard == 100.0


def test_gossip_lists_only_live_peers_freshest_first_and_is_bounded() -> None:
    table = PeerTable(PeerTableConfig(max_gossip=2))
    table.add(A, "h:1", 10.0, contacted=True)
    table.add(B, "h:2", 30.0, contacted=True)
    table.add(C, "h:3", 20.0, contacted=True)
    table.add(D, "h:4", -100.0, contacted=True)
    gossip = table.to_gossip(40.0, TIMEOUT)
    assert gossip == [[B, "h:2", 10.0], [C, "h:3", 20.0]]


def test_merge_excludes_this_node_itself() -> None:
    table = PeerTable()
    assert table.merge_gossip([[A, "h:1", 0.0], [B, "h:2", 0.0]], 5.0, exclude=A) == 1
    assert A not in table and B in table


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        {"a": 1},
        [[A, "h:1"]],
        [[A[:15], "h:1", 0.0]],
        [["aa" * 16, "h:1", 0.0]],
        [[A, "no-port", 0.0]],
        [[A, "h:0", 0.0]],
        [[A, "h:70000", 0.0]],
        [[A, ":1", 0.0]],
        [[A, "h" * 300 + ":1", 0.0]],
        [[A, "h" * 64 + ".lan:1", 0.0]],  # a DNS label is at most 63 characters
        [[A, "a..b:1", 0.0]],
        [[A, "h:\u00b2", 0.0]],  # a digit to str.isdigit, not to int()
        [[A, "[not-ipv6]:1", 0.0]],
        [[A, "h/x?y#:1", 0.0]],
        [[A, "h\r\nX: y:1", 0.0]],
        [[A, "h:1", -1.0]],
        [[A, "h:1", float("nan")]],
        [[A, "h:1", float("inf")]],
        [[A, "h:1", True]],
        [[A, "h:1", "3"]],
    ],
)
def test_malformed_gossip_is_skipped_not_raised(bad: Any) -> None:
    table = PeerTable()
    assert table.merge_gossip(bad, 0.0) == 0
    assert len(table) == 0


def test_addresses_a_url_can_be_made_of_are_kept_and_others_are_not() -> None:
    table = PeerTable()
    good = ["h:1", "gpu-3.lab.local.:7787", "10.0.0.2:80", "[fe80::1]:7787", "a_b:9"]
    for i, addr in enumerate(good):
        table.add(bytes([i]) * 16, addr, 0.0, contacted=True)
    table.add(b"z" * 16, "h" * 64 + ".lan:1", 0.0, contacted=True)  # what _contact may hear
    assert sorted(p.addr for p in table.all()) == sorted(good)


def test_a_flood_of_gossip_cannot_grow_the_table_past_its_bound() -> None:
    table = PeerTable(PeerTableConfig(max_peers=5, max_gossip=50))
    flood = [[i.to_bytes(16, "big"), f"h:{i + 1}", 0.0] for i in range(40)]
    table.merge_gossip(flood, 0.0)
    assert len(table) == 5


def test_a_new_node_at_an_old_address_replaces_the_dead_one() -> None:
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(B, "h:1", 5.0, contacted=True)  # the peer restarted with a new data dir
    assert table.get(A) is None
    assert table.at("h:1") == B
    table.answered(B, 20.0)
    peer = table.get(B)
    assert peer is not None and peer.heard == 20.0
    # A stale report of the old id cannot take the address back.
    table.merge_gossip([[A, "h:1", 10.0]], 21.0)
    assert table.get(A) is None and table.get(B) is not None


def test_a_fresher_report_moves_a_peer_to_its_new_address() -> None:
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.merge_gossip([[A, "h:9", 1.0]], 10.0)
    peer = table.get(A)
    assert peer is not None and peer.addr == "h:9" and peer.heard == 9.0
    table.merge_gossip([[A, "h:5", 5.0]], 11.0)  # older news than what we hold
    assert table.get(A).addr == "h:9"  # type: ignore[union-attr]


@pytest.mark.parametrize("rng", [random.Random(3), np.random.default_rng(3)])
def test_random_live_draws_distinct_live_peers(rng: random.Random | np.random.Generator) -> None:
    table = PeerTable()
    for i, node in enumerate((A, B, C)):
        table.add(node, f"h:{i + 1}", 100.0, contacted=True)
    table.add(D, "h:4", 0.0, contacted=True)
    picks = table.random_live(rng, 2, 110.0, TIMEOUT)
    assert len(picks) == 2 and len({p.node_id for p in picks}) == 2
    assert D not in {p.node_id for p in picks}
    assert len(table.random_live(rng, 10, 110.0, TIMEOUT)) == 3
    assert table.random_live(rng, 0, 110.0, TIMEOUT) == []


def test_random_live_is_reproducible_from_the_seed() -> None:
    table = PeerTable()
    for i in range(20):
        table.add(i.to_bytes(16, "big"), f"h:{i + 1}", 0.0, contacted=True)
    first = table.random_live(np.random.default_rng(7), 5, 1.0, TIMEOUT)
    second = table.random_live(np.random.default_rng(7), 5, 1.0, TIMEOUT)
    assert [p.node_id for p in first] == [p.node_id for p in second]


ids = st.integers(0, 7).map(lambda i: i.to_bytes(16, "big"))
entries = st.lists(
    st.tuples(ids, st.integers(1, 6).map(lambda p: f"h:{p}"), st.floats(0, 100)), max_size=12
)


@given(entries)
def test_one_address_holds_at_most_one_node_and_ages_are_never_negative(
    reports: list[tuple[bytes, str, float]],
) -> None:
    table = PeerTable()
    table.merge_gossip([list(r) for r in reports], 100.0)
    addrs = [p.addr for p in table.all()]
    assert len(addrs) == len(set(addrs))
    assert all(age >= 0 for _, _, age in table.to_gossip(100.0, 1000.0))


@given(entries, entries)
def test_merging_gossip_never_makes_an_entry_fresher_than_its_freshest_report(
    first: list[tuple[bytes, str, float]], second: list[tuple[bytes, str, float]]
) -> None:
    table = PeerTable()
    table.merge_gossip([list(r) for r in first], 100.0)
    table.merge_gossip([list(r) for r in second], 100.0)
    for peer in table.all():
        reported = [100.0 - age for node, _, age in first + second if node == peer.node_id]
        assert peer.heard <= max(reported)


def test_silent_peers_are_the_known_ones_past_the_timeout_and_not_yet_expired() -> None:
    table = PeerTable(PeerTableConfig(expire_after=100.0))
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(B, "h:2", 50.0, contacted=True)
    table.add(C, "h:3", 75.0, contacted=False)
    # At 90 s with a 30 s timeout: C is live, A and B are silent; none has expired yet.
    assert [p.node_id for p in table.silent(90.0, TIMEOUT)] == [A, B]
    assert [p.node_id for p in table.live(90.0, TIMEOUT)] == [C]
    table.expire(101.0)  # A was last heard of 101 s ago: gone, not silent
    assert [p.node_id for p in table.silent(101.0, TIMEOUT)] == [B]


def test_no_other_id_is_ever_entered_at_this_nodes_own_address() -> None:
    # A peer restarted on its port with a new data dir heard of its dead predecessor at its
    # own address; its calls to that address reached itself and kept the ghost "live".
    table = PeerTable(own_addrs=frozenset({"h:2"}))
    table.merge_gossip([[A, "h:2", 0.0], [B, "h:3", 0.0]], 10.0)
    table.add(C, "h:2", 10.0, contacted=True)
    assert table.get(A) is None and table.get(C) is None and table.get(B) is not None
    assert table.at("h:2") is None  # a call to our own address names nobody else
    assert [p.node_id for p in table.all()] == [B]


def test_a_peer_bound_to_every_interface_owns_each_of_its_addresses() -> None:
    # Others know a peer bound to 0.0.0.0 by its LAN address, where a ghost could sit too.
    assert own_addresses("0.0.0.0", 7787, ["127.0.0.1", "10.0.0.5"]) == {
        "0.0.0.0:7787",
        "127.0.0.1:7787",
        "10.0.0.5:7787",
    }
    assert own_addresses("127.0.0.1", 7787, ["10.0.0.5"]) == {"127.0.0.1:7787"}


def test_a_peer_that_left_is_gone_until_it_speaks_to_us_itself() -> None:
    table = PeerTable()
    table.add(A, "h:1", 100.0, contacted=True)
    table.add(B, "h:2", 100.0, contacted=True)
    table.leave(A)
    table.leave(C)  # unknown: nothing to do
    assert not table.is_alive(A, 100.0, TIMEOUT)
    assert [p.node_id for p in table.live(100.0, TIMEOUT)] == [B]
    assert [p.node_id for p in table.silent(100.0, TIMEOUT)] == [A]  # still called now and then
    assert [e[0] for e in table.to_gossip(100.0, TIMEOUT)] == [B]  # not passed on as live
    # Second-hand news (gossip, mDNS) of it, however fresh, does not bring it back.
    table.merge_gossip([[A, "h:1", 0.0]], 101.0)
    table.add(A, "h:1", 101.0, contacted=False)
    assert not table.is_alive(A, 101.0, TIMEOUT) and C not in table
    # Nor does an answer to a call that named it (a replying peer names no sender, and an
    # answer is no request of its own); its own word does: a request from it.
    table.answered(A, 101.5)
    assert not table.is_alive(A, 101.5, TIMEOUT)
    table.add(A, "h:1", 102.0, contacted=True)
    assert table.is_alive(A, 102.0, TIMEOUT)
    table.leave(A)
    table.seen(A, 103.0, itself=True)
    assert table.is_alive(A, 103.0, TIMEOUT)
    # Gone, but heard of within the timeout: its trials are not judged lost before the
    # timeout (a peer stopped to restart keeps its frozen trials for its checkpoints).
    table.leave(A)
    assert table.heard_within(A, 103.0 + TIMEOUT, TIMEOUT) and not table.is_alive(A, 103.0, TIMEOUT)
    assert not table.heard_within(A, 103.1 + TIMEOUT, TIMEOUT)


def test_liveness_news_tells_each_peer_found_gone_and_back_once() -> None:
    """A partition and its heal left no line in a peer's log: each change is now told once."""
    table, news = PeerTable(PeerTableConfig(expire_after=100.0)), LivenessNews()

    def ids(peers: list[Any]) -> list[bytes]:
        return [p.node_id for p in peers]

    def told(now: float) -> tuple[list[bytes], list[bytes], list[bytes]]:
        found, back, gone, moved = news.changes(table, now, TIMEOUT)
        assert moved == []
        return ids(found), ids(back), ids(gone)

    table.add(B, "h:2", 0.0, contacted=True)
    table.add(A, "h:1", 0.0, contacted=True)
    assert told(1.0) == ([A, B], [], [])
    assert told(2.0) == ([], [], [])
    table.add(A, "h:1", 20.0, contacted=True)
    assert told(31.0) == ([], [], [B])  # B is silent past the timeout
    assert told(32.0) == ([], [], [])
    table.add(B, "h:2", 33.0, contacted=True)
    assert told(34.0) == ([], [B], [])  # back, not found
    table.leave(A)
    found, back, gone, _ = news.changes(table, 35.0, TIMEOUT)
    # A gone peer as the table has it now: it said it left.
    assert (found, back, ids(gone)) == ([], [], [A]) and gone[0].left
    # Expired from the table while gone, a peer coming back is found anew.
    table.add(C, "h:3", 200.0, contacted=True)
    assert told(200.0) == ([C], [], [B])
    table.add(B, "h:2", 400.0, contacted=True)
    assert told(400.0) == ([B], [], [C])


def test_a_peer_that_left_and_came_back_within_one_look_is_news() -> None:
    news = LivenessNews()
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    assert [p.node_id for p in news.changes(table, 0.0, TIMEOUT)[0]] == [A]  # found
    news.left(A)  # said at once by its peer; and it is back before the next look
    table.leave(A)
    table.add(A, "h:1", 1.0, contacted=True)
    found, back, gone, moved = news.changes(table, 1.0, TIMEOUT)
    assert (found, [p.node_id for p in back], gone, moved) == ([], [A], [], [])
    news.left(B)  # (unknown: nothing to say)
    assert news.changes(table, 2.0, TIMEOUT) == ([], [], [], [])


def test_a_node_replaced_at_its_address_that_comes_back_is_no_longer_replaced() -> None:
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(B, "h:1", 1.0, contacted=True)  # another node at its address: A dropped
    assert table.was_replaced(A) and not table.was_replaced(B)
    table.add(A, "h:2", 2.0, contacted=True)  # A speaks again, from elsewhere
    assert not table.was_replaced(A)  # (dropped for silence later, that is what is said)
    table.expire(1000.0)
    assert table.get(A) is None and not table.was_replaced(A)


def test_liveness_news_tells_a_live_peer_at_another_address_once() -> None:
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=True)
    news.changes(table, 0.0, TIMEOUT)
    table.add(A, "h:2", 1.0, contacted=True)  # restarted on another port, never silent
    found, back, gone, moved = news.changes(table, 1.0, TIMEOUT)
    assert (found, back, gone) == ([], [], [])
    assert [(old, p.node_id, p.addr) for old, p in moved] == [("h:1", A, "h:2")]
    assert news.changes(table, 2.0, TIMEOUT).moved == []


def test_a_peer_known_at_two_addresses_moving_between_them_is_told_once() -> None:
    # A peer bound to every interface, known to others at each of its addresses, moved
    # between them in this table every few seconds, each move a line, for good (a review: 58
    # lines in 8.5 minutes).
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=True)
    news.changes(table, 0.0, TIMEOUT)
    told = []
    for now in range(1, 21):
        table.add(A, f"h:{1 + now % 2}", float(now), contacted=True)
        told += [(old, p.addr) for old, p in news.changes(table, float(now), TIMEOUT).moved]
    assert told == [("h:1", "h:2")]
    table.add(A, "h:3", 21.0, contacted=True)  # restarted on another port: news
    # ("was at" the address the log last named, h:2, not the one the last look saw)
    assert [(o, p.addr) for o, p in news.changes(table, 21.0, TIMEOUT).moved] == [("h:2", "h:3")]


def test_a_peer_restarted_back_on_a_port_it_used_before_is_told_there_again() -> None:
    # Told at h:1, then at h:2, a peer restarted back on h:1 was not told (a review: 2 of 2):
    # its run token tells a restart from a peer moving between its addresses in one run.
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=True)
    news.changes(table, 0.0, TIMEOUT, {A: b"run1"})
    told = []
    moves = [(1, "h:2", b"run2"), (2, "h:1", b"run3"), (3, "h:2", b"run3"), (4, "h:1", b"run3")]
    for now, addr, run in moves:
        table.add(A, addr, float(now), contacted=True)
        moved = news.changes(table, float(now), TIMEOUT, {A: run}).moved
        told += [(old, p.addr) for old, p in moved]
    # (The last move is within run3, back to an address it was told at in that run: the
    # flapping of a peer known at two addresses, not news.)
    assert told == [("h:1", "h:2"), ("h:2", "h:1"), ("h:1", "h:2")]


def test_a_peer_seen_back_at_an_old_address_before_its_new_runs_token_is_told_then() -> None:
    # An observer that learns the return by gossip (or its own call) while it still holds
    # the run before's token took it for flapping between two addresses; when the new run's
    # request came, the table already had the address, and the return was never told (a
    # review: 12 of 12 observers that were not the restarted peer's --join).
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=True)
    news.changes(table, 0.0, TIMEOUT, {A: b"run1"})
    table.add(A, "h:2", 1.0, contacted=True)  # restarted on h:2, heard of by gossip
    assert [(o, p.addr) for o, p in news.changes(table, 1.0, TIMEOUT, {A: b"run1"}).moved] == [
        ("h:1", "h:2")
    ]
    table.add(A, "h:1", 2.0, contacted=True)  # restarted back on h:1, heard of by gossip
    assert news.changes(table, 2.0, TIMEOUT, {A: b"run1"}).moved == []  # (as flapping would)
    moved = news.changes(table, 3.0, TIMEOUT, {A: b"run3"}).moved  # its own request comes
    assert [(o, p.addr) for o, p in moved] == [("h:2", "h:1")]
    assert news.changes(table, 4.0, TIMEOUT, {A: b"run3"}).moved == []


def test_a_return_is_told_by_an_observer_that_heard_no_token_of_the_run_before() -> None:
    # Known by gossip only in its first two runs, a peer back on its first port was taken
    # for one flapping between two addresses when its third run's token came (a review of
    # the fix: 13 of 40 observers).
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=False)
    news.changes(table, 0.0, TIMEOUT)
    table.add(A, "h:2", 1.0, contacted=False)
    assert len(news.changes(table, 1.0, TIMEOUT).moved) == 1
    table.add(A, "h:1", 2.0, contacted=False)
    assert news.changes(table, 2.0, TIMEOUT).moved == []  # (no token: as flapping would)
    moved = news.changes(table, 3.0, TIMEOUT, {A: b"run3"}).moved
    assert [(o, p.addr) for o, p in moved] == [("h:2", "h:1")]


def test_a_peer_whose_first_token_is_heard_late_is_not_told_again_for_it() -> None:
    table, news = PeerTable(), LivenessNews()
    table.add(A, "h:1", 0.0, contacted=True)  # found by gossip: no token yet
    news.changes(table, 0.0, TIMEOUT)
    table.add(A, "h:2", 1.0, contacted=True)
    assert len(news.changes(table, 1.0, TIMEOUT, {A: b"run1"}).moved) == 1
    table.add(A, "h:1", 2.0, contacted=True)  # the same run, at its other address
    assert news.changes(table, 2.0, TIMEOUT, {A: b"run1"}).moved == []
