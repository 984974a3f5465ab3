"""A peer's configuration, as a mutation audit found unpinned: the timings the README promises
a real cluster, the defaults a PeerConfig shares with `metaopt peer start`, and its address."""

from __future__ import annotations

import dataclasses

from metaopt.peer._config import PeerConfig, Timing


def test_the_default_timings_are_the_ones_the_readme_gives() -> None:
    """The README tells users these numbers (a peer unheard of for 30 s is not live, its trials
    are lost after 60 s, SIGTERM then SIGKILL 10 s apart, reports at most five a second and one
    per 1/500 of the run's age, early-stopping decisions every 2 s, heartbeats 10 s apart):
    a changed default silently changes what a cluster does."""
    timing = Timing()
    assert (timing.peer_timeout, timing.lost_after) == (30.0, 60.0)
    assert (timing.stop_grace, timing.heartbeat, timing.monitor) == (10.0, 10.0, 2.0)
    assert (timing.report_interval, timing.report_age_fraction) == (0.2, 0.002)


def test_the_default_cluster_timings_keep_a_lab_cluster_one_hop_and_quick() -> None:
    """Every live peer of a lab cluster (16 or fewer) hears of a record at once, anti-entropy
    runs every 2 s and gossip every 5 s, new points settle 50 ms a rank, a stopping peer waits
    2 s to be heard leaving, requests time out after 10 s without a byte of their answer and
    after 60 s in all, and a handshake after 2.5 s (one lost SYN is sent again after 1 s)."""
    timing = Timing()
    assert timing.push_fanout == 16 and isinstance(timing.push_fanout, int)
    assert (timing.anti_entropy, timing.gossip, timing.schedule) == (2.0, 5.0, 0.5)
    assert (timing.settle, timing.leave_wait, timing.request_timeout) == (0.05, 2.0, 10.0)
    assert (timing.connect_timeout, timing.transfer_timeout) == (2.5, 60.0)
    # Every field is pinned by one of these two tests.
    assert len(dataclasses.fields(Timing)) == 16


def test_a_peer_config_defaults_to_what_peer_start_does() -> None:
    """A PeerConfig built in code (tests, an embedding program) runs as `metaopt peer start`
    with no options does: loopback, port 7787, GPUs found automatically, one CPU slot, mDNS on."""
    config = PeerConfig()
    assert (config.host, config.port, config.gpus, config.slots) == ("127.0.0.1", 7787, "auto", 1)
    assert config.mdns is True and config.join == () and config.key_text is None
    assert config.timing == Timing()


def test_a_peer_address_is_host_colon_port() -> None:
    """What a peer announces and gossips as its address: HOST:PORT, as --join takes it."""
    assert PeerConfig(host="10.0.0.5", port=7001).address == "10.0.0.5:7001"


def test_an_ipv6_host_gives_an_address_peers_and_the_cli_can_use() -> None:
    """`--host ::1` (or any one IPv6 address) made the address ::1:7787, which valid_addr
    refuses (peers drop it from gossip) and no URL can be formed from (the CLI's peer.address)."""
    from metaopt.peer._gossip import valid_addr

    address = PeerConfig(host="::1", port=7787).address
    assert address == "[::1]:7787" and valid_addr(address, 262)
