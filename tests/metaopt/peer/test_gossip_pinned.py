"""Peer-table behaviour a mutation audit found unpinned: gossip bounds, expiry on merge, who
holds an address on a tie, a contact's authority, and valid addresses at their edges."""

from __future__ import annotations

import random

import numpy as np

from metaopt.peer._gossip import PeerTable, PeerTableConfig, own_addresses, valid_addr

A, B, C = (bytes([i]) * 16 for i in range(1, 4))
TIMEOUT = 30.0


def test_a_gossip_message_is_read_only_up_to_max_gossip_entries() -> None:
    """A peer sends at most max_gossip entries; a longer message (a bad peer's) is cut there,
    so one message cannot cost more than that much work or fill the table."""
    table = PeerTable(PeerTableConfig(max_gossip=2))
    entries = [[A, "h:1", 0.0], [B, "h:2", 0.0], [C, "h:3", 0.0]]
    assert table.merge_gossip(entries, 10.0) == 2
    assert A in table and B in table and C not in table


def test_a_gossiped_entry_already_past_expiry_is_not_kept() -> None:
    """An age past expire_after is a dead peer's: it must not enter the table (it would be
    called as a silent peer until something else expired it)."""
    table = PeerTable(PeerTableConfig(expire_after=100.0))
    assert table.merge_gossip([[A, "h:1", 150.0], [B, "h:2", 5.0]], 1000.0) == 2
    assert A not in table and B in table
    assert [p.node_id for p in table.silent(1000.0, TIMEOUT)] == []


def test_an_entry_is_kept_for_expire_after_seconds_and_dropped_just_past_it() -> None:
    """Same edge as liveness (heard within the timeout is live): heard exactly expire_after
    ago it is still known."""
    table = PeerTable(PeerTableConfig(expire_after=100.0))
    table.add(A, "h:1", 0.0, contacted=True)
    table.expire(100.0)
    assert A in table
    table.expire(100.5)
    assert A not in table


def test_a_second_hand_report_as_fresh_as_the_holder_does_not_take_its_address() -> None:
    """Only fresher evidence moves an address: a report of another id there, no fresher than
    what we know of the peer holding it, is a stale one (the holder's dead predecessor)."""
    table = PeerTable()
    table.add(A, "h:1", 10.0, contacted=True)
    table.merge_gossip([[B, "h:1", 0.0]], 10.0)  # heard 10.0: a tie
    assert table.get(A) is not None and B not in table


def test_a_peer_calling_from_an_address_takes_it_whatever_was_reported_there() -> None:
    """A request naming its sender is first-hand: it takes the address even from an entry
    reported (second-hand) just as recently, or that peer would be unreachable by its id."""
    table = PeerTable()
    table.merge_gossip([[A, "h:1", 0.0]], 10.0)
    table.add(B, "h:1", 10.0, contacted=True)
    peer = table.get(B)
    assert A not in table and peer is not None and peer.addr == "h:1"


def test_a_peer_calling_from_a_new_address_is_moved_there_at_once() -> None:
    """Its own call is authoritative: the entry moves to the address it calls from even when
    the last (second-hand) report of it is as recent."""
    table = PeerTable()
    table.merge_gossip([[A, "h:1", 0.0]], 10.0)
    table.add(A, "h:9", 10.0, contacted=True)
    peer = table.get(A)
    assert peer is not None and peer.addr == "h:9" and peer.last_contact == 10.0


def test_an_older_report_never_makes_a_peer_look_older() -> None:
    """Gossip arrives out of order: a stale report must not pull the peer's freshest evidence
    back (it would count as dead sooner, and its trials be taken over)."""
    table = PeerTable()
    table.add(A, "h:1", 100.0, contacted=True)
    table.merge_gossip([[A, "h:1", 50.0]], 110.0)  # heard at 60.0
    peer = table.get(A)
    assert peer is not None and peer.heard == 100.0
    assert table.is_alive(A, 100.0 + TIMEOUT, TIMEOUT)


def test_gossip_keeps_the_time_of_this_nodes_own_last_contact() -> None:
    """`peer status` shows the last contact: second-hand news of a peer does not erase it."""
    table = PeerTable()
    table.add(A, "h:1", 100.0, contacted=True)
    table.merge_gossip([[A, "h:1", 0.0]], 110.0)
    table.add(A, "h:1", 111.0, contacted=False)  # mDNS
    peer = table.get(A)
    assert peer is not None and peer.last_contact == 100.0 and peer.heard == 111.0


def test_addresses_are_valid_up_to_their_exact_limits() -> None:
    """The longest address allowed and the highest port are accepted, one past is not."""
    limit = PeerTableConfig().max_addr_len
    longest = "a." * ((limit - 6) // 2) + "b:7787"
    longest = "a" * (limit - len(longest)) + longest
    assert len(longest) == limit and valid_addr(longest, limit)
    assert not valid_addr("a" + longest, limit)
    assert valid_addr("h:65535", limit) and not valid_addr("h:65536", limit)
    assert valid_addr("h:1", limit) and not valid_addr(":1", limit)
    assert not valid_addr("[fe80::1:7787", limit)  # an unclosed bracket is no IPv6 address


def test_a_peer_bound_to_the_empty_host_owns_each_of_its_addresses() -> None:
    """The empty host binds every interface, as 0.0.0.0 does."""
    assert own_addresses("", 7787, ["10.0.0.5"]) == {":7787", "10.0.0.5:7787"}


def test_a_second_hand_report_as_fresh_as_what_we_hold_does_not_move_a_peer() -> None:
    """Only fresher second-hand news moves a peer to another address: one no fresher than
    this node's own contact leaves it where this node reached it."""
    table = PeerTable()
    table.add(A, "h:1", 10.0, contacted=True)
    table.merge_gossip([[A, "h:9", 0.0]], 10.0)  # heard 10.0: a tie
    peer = table.get(A)
    assert peer is not None and peer.addr == "h:1"


def test_random_live_with_a_numpy_generator_never_draws_a_peer_twice() -> None:
    """A graceful stop reconciles with several live peers drawn with the node's numpy
    generator: each must be a different peer, or fewer peers get this one's last records."""
    table = PeerTable()
    for i in range(20):
        table.add(i.to_bytes(16, "big"), f"h:{i + 1}", 0.0, contacted=True)
    rng = np.random.default_rng(1)
    for k in (5, 19, 20):
        picks = table.random_live(rng, k, 1.0, TIMEOUT)
        assert len({p.node_id for p in picks}) == k


A, B, C = (bytes([i]) * 16 for i in range(1, 4))


TIMEOUT = 30.0


def test_a_moved_peer_frees_its_old_address() -> None:
    """A peer restarted on a new port: its old address names it no more, and a new peer that
    then starts on the old address does not knock the moved peer out of the table."""
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(A, "h:2", 1.0, contacted=True)  # A moved to h:2
    assert table.at("h:1") is None
    assert table.at("h:2") == A
    table.add(B, "h:1", 2.0, contacted=True)  # another peer now at A's old address
    assert A in table and table.get(A).addr == "h:2"
    assert B in table


def test_a_peer_talked_to_long_ago_is_not_preferred_over_one_talked_to_lately() -> None:
    """partners() draws first from peers this node talked to within the timeout. A peer talked
    to once, long ago, and only heard of since (gossip) is not among them."""
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)  # talked to at t=0 ...
    table.merge_gossip([[A, "h:1", 0.0]], 100.0)  # ... only heard of since (t=100)
    table.add(B, "h:2", 95.0, contacted=True)  # talked to at t=95
    rng = random.Random(0)
    picks = {table.partners(rng, 1, 100.0, TIMEOUT)[0].node_id for _ in range(50)}
    assert picks == {B}


def test_partners_make_up_k_from_peers_only_heard_of() -> None:
    """With fewer peers talked to than k, the rest come from peers only heard of (a fresh peer
    that knows the others by gossip or mDNS only must still push its records)."""
    table = PeerTable()
    table.add(A, "h:1", 10.0, contacted=True)
    table.add(B, "h:2", 10.0, contacted=False)
    got = {p.node_id for p in table.partners(random.Random(1), 2, 10.0, TIMEOUT)}
    assert got == {A, B}
    table2 = PeerTable()
    table2.add(C, "h:3", 10.0, contacted=False)
    assert [p.node_id for p in table2.partners(random.Random(1), 1, 10.0, TIMEOUT)] == [C]


def test_an_old_address_is_not_told_past_the_timeout() -> None:
    """elsewhere(): a node's address before its move is told only if heard there within the
    timeout (else every gossip reply sends the node to call a long-gone address)."""
    table = PeerTable()
    table.add(A, "h:1", 0.0, contacted=True)
    table.add(A, "h:2", 5.0, contacted=True)
    assert table.elsewhere(A, 10.0, TIMEOUT) == [[A, "h:1", 10.0]]
    table.add(A, "h:2", 100.0, contacted=True)
    assert table.elsewhere(A, 100.0, TIMEOUT) == []
