"""Discovery behaviour a mutation audit found unpinned: what zeroconf is asked to open and to
announce, how its sockets are pinned and drained, what happens when starting fails, which
announcements are resolved and how many at once, and which addresses, ids and versions are
accepted. zeroconf is replaced by a spy here: nothing is sent on any interface (the sockets the
spy hands out are never bound, except one on 127.0.0.1 that only receives from 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import ifaddr
import pytest
from zeroconf import (
    BadTypeInNameException,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
)
from zeroconf.asyncio import AsyncServiceInfo

from metaopt.peer import _discovery
from metaopt.peer._discovery import (
    SERVICE_TYPE,
    Discovery,
    DiscoveryConfig,
    DiscoveryError,
    PeerInfo,
    local_adapters,
    plan_interfaces,
)
from tests.metaopt.peer.test_discovery import ADAPTERS, _config, _fingerprint

_IP_MULTICAST_ALL = 49  # Linux


def _bound_device(sock: socket.socket) -> str:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0").decode()


# ------------------------------------------------------------------------- a zeroconf spy


@dataclass
class Spy:
    """What Discovery asked of zeroconf; ``register`` and ``request`` say how zeroconf answers."""

    made: list[FakeAsyncZeroconf] = field(default_factory=list)
    browsers: list[FakeBrowser] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    register: Callable[[Any], Any] | None = None  # awaited in place of registering
    requests: list[tuple[str, int]] = field(default_factory=list)  # (name, timeout ms)
    request: Callable[[AsyncServiceInfo], Any] | None = None  # awaited, its result returned


class FakeEngine:
    def __init__(self, spy: Spy) -> None:
        # Never bound and never sent on: only pinned, drained and closed.
        self._listen_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._respond_sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
        spy.sockets += [self._listen_socket, *self._respond_sockets]


class FakeZeroconf:
    def __init__(self, spy: Spy) -> None:
        self.engine = FakeEngine(spy)


class FakeAsyncZeroconf:
    def __init__(self, spy: Spy, **kwargs: Any) -> None:
        self.spy, self.kwargs = spy, kwargs
        self.zeroconf = FakeZeroconf(spy)
        self.registered: list[tuple[AsyncServiceInfo, bool]] = []
        self.closed = False
        self.sockets_open_at_close: list[bool] | None = None
        spy.made.append(self)

    async def async_register_service(
        self, info: AsyncServiceInfo, allow_name_change: bool = False
    ) -> None:
        self.registered.append((info, allow_name_change))
        if self.spy.register is not None:
            await self.spy.register(info)

    async def async_close(self) -> None:
        engine = self.zeroconf.engine
        owned = [engine._listen_socket, *engine._respond_sockets]
        self.sockets_open_at_close = [s.fileno() != -1 for s in owned]
        for sock in owned:
            sock.close()
        self.closed = True


class FakeBrowser:
    def __init__(self, spy: Spy, zc: Any, service_type: str, handlers: list[Any]) -> None:
        self.zc, self.service_type, self.handlers = zc, service_type, handlers
        self.cancelled = False
        spy.browsers.append(self)

    async def async_cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    """zeroconf replaced in the discovery module: every call recorded, nothing on the network."""
    s = Spy()

    class Resolving(AsyncServiceInfo):
        async def async_request(self, zc: Any, timeout: float, *a: Any, **k: Any) -> bool:
            s.requests.append((self.name, int(timeout)))
            return bool(await s.request(self)) if s.request is not None else False

    monkeypatch.setattr(
        _discovery, "AsyncZeroconf", lambda **kwargs: FakeAsyncZeroconf(s, **kwargs)
    )
    monkeypatch.setattr(_discovery, "AsyncServiceBrowser", lambda *a, **k: FakeBrowser(s, *a, **k))
    monkeypatch.setattr(_discovery, "AsyncServiceInfo", Resolving)
    yield s
    for sock in s.sockets:
        sock.close()


def _discovery_on_lo(
    found: list[PeerInfo] | None = None, **changes: Any
) -> tuple[Discovery, DiscoveryConfig]:
    config = replace(_config(_fingerprint(), 17400, "me"), **changes)
    sink = found if found is not None else []
    return Discovery(config, on_found=sink.append, adapters=lambda: list(ADAPTERS)), config


def _announcement(
    node_id: str = "ab" * 16,
    fp: str = "f" * 16,
    version: str = "1",
    addresses: list[str] | None = None,
    port: int | None = 9,
) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"x-{node_id[:8]}.{SERVICE_TYPE}",
        port=port,
        properties={"id": node_id, "fp": fp, "v": version},
        parsed_addresses=["127.0.0.1"] if addresses is None else addresses,
    )


# ---------------------------------------------------------------- what zeroconf is asked


@pytest.mark.asyncio
async def test_start_opens_zeroconf_on_the_bound_address_alone_and_ipv4_only(spy: Spy) -> None:
    """The network-safety rule itself: zeroconf is given the bound address, never every
    interface nor IPv6, so a peer on 127.0.0.1 cannot multicast on the machine's LAN."""
    disc, _ = _discovery_on_lo()
    await disc.start()
    try:
        [azc] = spy.made
        assert azc.kwargs == {"interfaces": ["127.0.0.1"], "ip_version": IPVersion.V4Only}
    finally:
        await disc.stop()


@pytest.mark.asyncio
async def test_start_pins_every_socket_to_the_device_and_leaves_other_sockets_groups(
    spy: Spy,
) -> None:
    """Each socket is bound to lo and stops receiving multicast groups joined by other sockets
    (IP_MULTICAST_ALL=0); without the latter the wildcard listen socket hears other LANs' mDNS."""
    disc, _ = _discovery_on_lo()
    await disc.start()
    try:
        assert len(spy.sockets) == 2
        for sock in spy.sockets:
            assert _bound_device(sock) == "lo"
            assert sock.getsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL) == 0
    finally:
        await disc.stop()


@pytest.mark.asyncio
async def test_start_announces_only_the_bound_address_with_its_port_id_and_version(
    spy: Spy,
) -> None:
    """The announcement names the bound address alone (not the machine's other addresses, here
    192.0.2.7), and may take another name on a clash rather than fail."""
    disc, config = _discovery_on_lo()
    await disc.start()
    try:
        [(info, allow_name_change)] = spy.made[0].registered
        assert info.parsed_addresses() == ["127.0.0.1"]
        assert info.port == config.port
        assert info.decoded_properties == {
            "id": config.node_id,
            "fp": config.cluster_fingerprint,
            "v": "1",
        }
        assert allow_name_change is True
        [browser] = spy.browsers
        assert browser.service_type == SERVICE_TYPE
    finally:
        await disc.stop()


@pytest.mark.asyncio
async def test_a_second_start_opens_nothing_more(spy: Spy) -> None:
    """start() twice must not open a second zeroconf: the first's sockets would be dropped
    unclosed, still announcing, and stop() could no longer close them."""
    disc, _ = _discovery_on_lo()
    await disc.start()
    await disc.start()
    await disc.stop()
    assert len(spy.made) == 1 and spy.made[0].closed


@pytest.mark.asyncio
async def test_stop_cancels_the_browser_and_closes_zeroconf(spy: Spy) -> None:
    """A stopped peer must stop browsing (its browser would keep querying) and close every
    socket."""
    disc, _ = _discovery_on_lo()
    await disc.start()
    await disc.stop()
    assert spy.browsers[0].cancelled
    assert spy.made[0].closed and disc.sockets == []


@pytest.mark.asyncio
async def test_a_failed_pinning_closes_the_sockets_before_zeroconf_can_use_them(spy: Spy) -> None:
    """When the sockets cannot be pinned (no such device) start() fails closed: the sockets are
    closed first, so zeroconf's engine never reads or sends on them unrestricted, and then
    zeroconf itself is closed (not left running with its threads and timers)."""
    disc = Discovery(
        _config(_fingerprint(), 17401),
        on_found=lambda p: None,
        adapters=lambda: [("mo-nosuchdev", "127.0.0.1", 8)],
    )
    with pytest.raises(DiscoveryError, match="cannot restrict mDNS to mo-nosuchdev"):
        await disc.start()
    [azc] = spy.made
    assert azc.closed
    assert azc.sockets_open_at_close == [False, False]
    assert spy.made[0].registered == [] and spy.browsers == []


@pytest.mark.parametrize(
    "error",
    [OSError(99, "Cannot assign requested address"), NonUniqueNameException("taken")],
    ids=["oserror", "non-unique-name"],
)
@pytest.mark.asyncio
async def test_a_failed_announcement_is_a_discovery_error_and_closes_everything(
    spy: Spy, error: Exception
) -> None:
    """The peer turns DiscoveryError into "mDNS is off, use --join": any other exception, or
    a zeroconf left open after the failure, would be a peer still announcing that says it
    does not."""

    async def fail(info: Any) -> None:
        raise error

    spy.register = fail
    disc, _ = _discovery_on_lo()
    with pytest.raises(DiscoveryError, match=r"mDNS announcement failed on 127\.0\.0\.1"):
        await disc.start()
    assert spy.made[0].closed and disc.sockets == []


@pytest.mark.asyncio
async def test_an_announcement_that_never_completes_fails_after_the_close_timeout(
    spy: Spy,
) -> None:
    """A register that never returns (a wedged engine) must not hang the peer's start."""

    async def never(info: Any) -> None:
        await asyncio.Event().wait()

    spy.register = never
    disc, _ = _discovery_on_lo(close_timeout=0.05)
    with pytest.raises(DiscoveryError, match="mDNS announcement failed"):
        await asyncio.wait_for(disc.start(), timeout=10)  # a guard against a hang, no timing
    assert spy.made[0].closed


# -------------------------------------------------------------- planning and the adapters


def test_plan_for_all_interfaces_refuses_a_machine_with_only_loopback() -> None:
    """0.0.0.0 announces the non-loopback addresses; with none there is nothing a peer
    elsewhere could reach, and an empty announcement would be made."""
    with pytest.raises(DiscoveryError, match="no non-loopback IPv4 address"):
        plan_interfaces("0.0.0.0", [("lo", "127.0.0.1", 8)])


def test_plan_says_an_ipv6_host_needs_ipv4() -> None:
    """The error for ::1 says what is wrong (mDNS here needs IPv4), not that the machine lacks
    the address, which it has."""
    with pytest.raises(DiscoveryError, match="needs an IPv4 address"):
        plan_interfaces("::1", [*ADAPTERS, ("lo", "::1", 128)])


def test_local_adapters_lists_ipv4_addresses_with_their_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IPv6 entries (tuples in ifaddr) are left out, and each prefix is kept: it is the subnet
    that announced addresses are checked against."""
    fake = [
        ifaddr.Adapter(
            "eth9",
            "eth9",
            [ifaddr.IP(("fe80::1", 0, 2), 64, "eth9"), ifaddr.IP("192.0.2.7", 24, "eth9")],
        ),
        ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo")]),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: fake)
    assert local_adapters() == [("eth9", "192.0.2.7", 24), ("lo", "127.0.0.1", 8)]


@pytest.mark.parametrize("name", ["", "x" * 200, "a b.c_d"])
def test_the_instance_label_is_a_valid_dns_label_ending_in_the_node_id(name: str) -> None:
    """At most 60 bytes (63, less room for a clash), never empty before the id suffix, dots and
    spaces replaced: a longer label is refused by zeroconf and discovery would be off for a
    peer with a long --name."""
    config = replace(_config("fp", 1, name), node_id="0123456789abcdef" * 2)
    label = Discovery(config, on_found=lambda p: None).service_name.removesuffix("." + SERVICE_TYPE)
    assert len(label) <= 60 and label.endswith("-01234567")
    cut = "x" * 51 + "-01234567"  # 60 bytes: the 63 DNS allows, less room for a clash's "-2"
    assert label == {"": "peer-01234567", "a b.c_d": "a-b-c_d-01234567"}.get(name, cut)
    assert "." not in label and label[: -len("-01234567")]


# ------------------------------------------------------------------- which are resolved


@pytest.mark.asyncio
async def test_removed_and_own_announcements_are_not_resolved() -> None:
    """A goodbye must not start a resolution (it would query for a peer that just left), nor
    may this peer's own announcement."""
    disc, _ = _discovery_on_lo()
    disc._on_state_change(None, SERVICE_TYPE, f"x.{SERVICE_TYPE}", ServiceStateChange.Removed)
    disc._on_state_change(None, SERVICE_TYPE, disc.service_name, ServiceStateChange.Added)
    assert disc._tasks == {}


@pytest.mark.asyncio
async def test_resolutions_are_one_per_name_capped_and_forgotten_when_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Repeated announcements of one name share one resolution; past max_pending the rest are
    dropped (a flood guard); and a finished one frees its place, or after max_pending names
    discovery would stop resolving anyone for the rest of the peer's life."""
    disc, _ = _discovery_on_lo(max_pending=2)
    gate = asyncio.Event()
    started: list[str] = []

    async def resolve(service_type: str, name: str) -> None:
        started.append(name)
        await gate.wait()

    monkeypatch.setattr(disc, "_resolve", resolve)
    for name in ["a", "a", "b", "c"]:
        disc._on_state_change(
            None, SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", ServiceStateChange.Added
        )
    assert sorted(disc._tasks) == [f"a.{SERVICE_TYPE}", f"b.{SERVICE_TYPE}"]
    tasks = list(disc._tasks.values())
    gate.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert disc._tasks == {}
    assert sorted(started) == [f"a.{SERVICE_TYPE}", f"b.{SERVICE_TYPE}"]
    disc._on_state_change(None, SERVICE_TYPE, f"c.{SERVICE_TYPE}", ServiceStateChange.Updated)
    assert list(disc._tasks) == [f"c.{SERVICE_TYPE}"]
    disc._tasks[f"c.{SERVICE_TYPE}"].cancel()


@pytest.mark.asyncio
async def test_a_resolution_after_stop_does_nothing() -> None:
    """A browser callback can still fire while stop() runs: its resolution must end quietly,
    not fail on the closed zeroconf."""
    found: list[PeerInfo] = []
    disc, _ = _discovery_on_lo(found)
    await disc._resolve(SERVICE_TYPE, f"x.{SERVICE_TYPE}")  # returns, raises nothing
    assert found == []


@pytest.mark.asyncio
async def test_resolution_waits_the_resolve_timeout_in_milliseconds_and_delivers(
    spy: Spy,
) -> None:
    """async_request takes milliseconds: 3 s must be 3000, or every resolution not already in
    the cache would give up at once."""
    found: list[PeerInfo] = []
    disc, _ = _discovery_on_lo(found)

    async def answer(info: AsyncServiceInfo) -> bool:
        # What a resolution fills in (zeroconf has no public setter for the TXT properties).
        props: dict[str | bytes, str | bytes | None] = {
            "id": "ab" * 16,
            "fp": disc.config.cluster_fingerprint,
            "v": "1",
        }
        info.port, info.addresses = 9, [socket.inet_aton("127.0.0.1")]
        info._set_properties(props)
        return True

    spy.request = answer
    await disc.start()
    try:
        await disc._resolve(SERVICE_TYPE, f"x-abababab.{SERVICE_TYPE}")
    finally:
        await disc.stop()
    assert spy.requests == [(f"x-abababab.{SERVICE_TYPE}", 3000)]
    assert [(p.node_id, p.host, p.port, p.name) for p in found] == [
        ("ab" * 16, "127.0.0.1", 9, "x")
    ]


@pytest.mark.asyncio
async def test_at_most_max_resolving_resolutions_run_at_once(spy: Spy) -> None:
    """A burst of announcements is resolved a few at a time (each one sends queries)."""
    disc, _ = _discovery_on_lo(max_resolving=1)
    gate = asyncio.Event()
    running = [0]
    most = [0]

    async def slow(info: AsyncServiceInfo) -> bool:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await gate.wait()
        running[0] -= 1
        return False

    spy.request = slow
    await disc.start()
    try:
        tasks = [
            asyncio.ensure_future(disc._resolve(SERVICE_TYPE, f"{n}.{SERVICE_TYPE}")) for n in "abc"
        ]
        for _ in range(20):
            await asyncio.sleep(0)
        assert most[0] == 1 and len(spy.requests) == 1
        gate.set()
        await asyncio.gather(*tasks)
        assert len(spy.requests) == 3
    finally:
        await disc.stop()


@pytest.mark.asyncio
async def test_a_socket_error_while_resolving_ends_that_resolution_quietly(spy: Spy) -> None:
    """An interface going down mid-query raises OSError: the resolution ends, the peer goes on."""

    async def down(info: AsyncServiceInfo) -> bool:
        raise OSError(101, "Network is unreachable")

    spy.request = down
    disc, _ = _discovery_on_lo()
    await disc.start()
    try:
        await disc._resolve(SERVICE_TYPE, f"x.{SERVICE_TYPE}")  # returns, raises nothing
    finally:
        await disc.stop()


# --------------------------------------------------------------- which are accepted


def test_an_announcement_without_a_port_is_ignored_not_raised() -> None:
    """A TXT record seen without its SRV record has no port: ignored, not int(None)."""
    disc, _ = _discovery_on_lo()
    assert disc._parse("x", _announcement(port=None)) is None


@pytest.mark.parametrize("node_id", ["ab" * 17, "ab" * 16 + "0"])
def test_a_node_id_longer_than_16_bytes_is_malformed(node_id: str) -> None:
    """The node id is exactly 32 hex digits: a longer one would enter the peer table as an
    id no peer has."""
    disc, _ = _discovery_on_lo()
    assert disc._parse("x", _announcement(node_id=node_id)) is None


def test_an_uppercase_node_id_is_accepted_and_lowered() -> None:
    """Hex in either case names the same node; ids are compared lowercased."""
    disc, _ = _discovery_on_lo()
    peer = disc._parse("x", _announcement(node_id="AB" * 16))
    assert peer is not None and peer.node_id == "ab" * 16


def test_an_announcement_with_only_ipv6_addresses_is_ignored_not_raised() -> None:
    """mDNS here is IPv4: an IPv6 address must not reach the IPv4 subnet check and raise."""
    disc, _ = _discovery_on_lo()
    assert disc._parse("x", _announcement(addresses=["::1"])) is None
    assert disc._parse("x", _announcement(addresses=["fe80::1", "127.0.0.1"])) is not None


@pytest.mark.asyncio
async def test_only_an_address_on_the_bound_interfaces_subnet_is_taken(spy: Spy) -> None:
    """Bound to 127.0.0.1, a peer announcing only 192.0.2.7 is out of reach and ignored, and of
    several addresses the one inside 127.0.0.0/8 is used."""
    disc, _ = _discovery_on_lo()
    await disc.start()
    try:
        assert disc._parse("x", _announcement(addresses=["192.0.2.7"])) is None
        peer = disc._parse("x", _announcement(addresses=["192.0.2.7", "127.0.0.5"]))
        assert peer is not None and peer.host == "127.0.0.5"
    finally:
        await disc.stop()


def _peer(node_id: str, fp: str, version: int = 1) -> PeerInfo:
    return PeerInfo(node_id, "127.0.0.1", 9, fp, version, "x")


def test_an_announcement_of_this_nodes_own_id_is_never_found() -> None:
    """A copy of this node's id (in any case, under another instance name: a stale record,
    a copied data directory) must not enter the peer table as another peer."""
    found: list[PeerInfo] = []
    disc, config = _discovery_on_lo(found)
    for node_id in (config.node_id, config.node_id.upper()):
        peer = disc._parse("x", _announcement(node_id=node_id, fp=config.cluster_fingerprint))
        assert peer is not None
        disc._deliver(peer)
    assert found == []


def test_an_announcement_of_this_nodes_own_id_is_told_to_on_self_for_a_twin_check() -> None:
    """...but it is told to ``on_self``, so the peer can call a twin of it there (a copied
    data directory, started on the LAN): by mDNS alone the two never heard of each other."""
    told: list[PeerInfo] = []
    config = _config(_fingerprint(), 17400, "me")
    disc = Discovery(config, on_found=lambda p: None, on_self=told.append)
    peer = disc._parse("x", _announcement(node_id=config.node_id, fp=config.cluster_fingerprint))
    assert peer is not None
    disc._deliver(peer)
    assert [p.node_id for p in told] == [config.node_id.lower()]


def test_a_peer_of_another_protocol_version_is_ignored_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Peers of another version would fail every session: ignored, with one warning each."""
    found: list[PeerInfo] = []
    disc, config = _discovery_on_lo(found)
    caplog.set_level(logging.WARNING, logger="metaopt.peer.discovery")
    for _ in range(2):
        disc._deliver(_peer("cd" * 16, config.cluster_fingerprint, version=2))
    assert found == []
    assert [r.getMessage().count("speaks protocol 2") for r in caplog.records] == [1]
    # A peer that knows no other says why (it was told "mDNS found none", and --join).
    assert disc.ignored() == ["release"]
    disc._deliver(_peer("ef" * 16, "other"))
    assert disc.ignored() == ["release", "cluster"]
    assert _discovery_on_lo([])[0].ignored() == []


def test_a_foreign_peer_is_reported_once_however_often_it_announces() -> None:
    """Announcements repeat every few seconds: the foreign-cluster hint is given once a node."""
    foreign: list[PeerInfo] = []
    disc = Discovery(
        _config(_fingerprint(), 17402), on_found=lambda p: None, on_foreign=foreign.append
    )
    for _ in range(3):
        disc._deliver(_peer("cd" * 16, "other"))
    disc._deliver(_peer("ef" * 16, "other"))
    assert [p.node_id for p in foreign] == ["cd" * 16, "ef" * 16]


# --------------------------------------------------------------- pinning and draining


def test_pinning_with_no_socket_found_refuses_rather_than_runs_unpinned() -> None:
    """If a zeroconf release renames its socket attributes, nothing would be pinned: discovery
    must refuse (the peer falls back to --join), not run on every interface."""
    with pytest.raises(DiscoveryError, match="could not reach zeroconf's sockets"):
        _discovery._pin_sockets([], "lo")


def test_pinning_refuses_outside_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    """SO_BINDTODEVICE is Linux's: elsewhere the sockets could not be pinned, so refuse."""
    monkeypatch.setattr(sys, "platform", "darwin")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(DiscoveryError, match="needs Linux"),
    ):
        _discovery._pin_sockets([sock], "lo")


def test_pinning_refuses_a_socket_zeroconf_already_wrapped() -> None:
    """asyncio's wrapped sockets mean the engine started, and may have read or sent already."""

    class Wrapped:
        def getsockopt(self, *args: Any) -> int:
            return 0

        def setsockopt(self, *args: Any) -> None:
            pass

    with pytest.raises(DiscoveryError, match="started before its sockets were restricted"):
        _discovery._pin_sockets([Wrapped()], "lo")


@pytest.mark.integration  # (it opens sockets on 127.0.0.1)
def test_pinning_drops_a_datagram_queued_before_it() -> None:
    """What arrived between bind and SO_BINDTODEVICE may have come from any interface."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"early", rx.getsockname())
        assert select.select([rx], [], [], 5)[0] == [rx]  # queued (a guard, not a timing)
        _discovery._pin_sockets([rx], "lo")
        with pytest.raises(BlockingIOError):
            rx.recv(100)


def test_draining_empties_every_queued_datagram_and_leaves_the_socket_non_blocking() -> None:
    """Every early datagram is dropped, not only the first; and the drain never blocks."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        for i in range(3):
            b.send(b"%d" % i)
        a.settimeout(2)  # a blocking drain would wait here, then stop early
        _discovery._drain(a)
        assert a.gettimeout() == 0.0
        with pytest.raises(BlockingIOError):
            a.recv(100)


# ------------------------------------------------------------ names and failures at start


@pytest.mark.asyncio
async def test_a_long_non_ascii_name_still_announces(spy: Spy) -> None:
    """--name (or the host name) may be any text: 20 CJK characters are 60 bytes, which with
    the id suffix passes the 63-byte label limit unless the label is cut by bytes."""
    disc, _ = _discovery_on_lo(name="日本" * 10)
    label = disc.service_name.removesuffix("." + SERVICE_TYPE)
    assert len(label.encode()) <= 60
    await disc.start()
    try:
        assert len(spy.made[0].registered) == 1
    finally:
        await disc.stop()


@pytest.mark.asyncio
async def test_a_start_that_fails_after_opening_zeroconf_closes_it(
    spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer drops a Discovery whose start() raised (mDNS is off): anything it had opened
    must be closed by then, or the sockets and zeroconf's engine live on unmanaged."""

    def refuse(*args: Any, **kwargs: Any) -> AsyncServiceInfo:
        raise BadTypeInNameException("Too long")

    disc, _ = _discovery_on_lo()
    monkeypatch.setattr(_discovery, "AsyncServiceInfo", refuse)
    with pytest.raises(DiscoveryError):
        await disc.start()
    assert spy.made[0].closed and disc.sockets == []
