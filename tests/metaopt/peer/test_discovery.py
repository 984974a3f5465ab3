"""mDNS discovery with real zeroconf: on 127.0.0.1 in one process, and across network namespaces.

Nothing here touches the machine's own interfaces: the loopback tests pin every zeroconf socket
to ``lo`` (and check it), and the namespace test builds its own bridge and veth pairs inside
namespaces it creates and deletes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from zeroconf import InterfaceChoice, ServiceStateChange

from metaopt.peer._discovery import (
    Discovery,
    DiscoveryConfig,
    DiscoveryError,
    PeerInfo,
    plan_interfaces,
)

PROBE = Path(__file__).with_name("mdns_probe.py")
ADAPTERS = [("lo", "127.0.0.1", 8), ("eth9", "192.0.2.7", 24)]
_names = itertools.count()
REMOVED = ServiceStateChange.Removed


def _fingerprint() -> str:
    # Other suites on this machine may announce on lo too; a fresh cluster keeps them foreign.
    return "test-" + os.urandom(8).hex()


def _bound_device(sock: socket.socket) -> str:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0").decode()


# --------------------------------------------------------------------------- pure planning


def test_plan_for_loopback_pins_lo_and_announces_only_the_bound_address() -> None:
    plan = plan_interfaces("127.0.0.1", ADAPTERS)
    assert plan.interfaces == ["127.0.0.1"]
    assert plan.addresses == ["127.0.0.1"]
    assert plan.device == "lo"
    assert str(plan.network) == "127.0.0.0/8"


def test_plan_for_an_interface_address_pins_that_device() -> None:
    plan = plan_interfaces("192.0.2.7", ADAPTERS)
    assert (plan.device, plan.addresses, str(plan.network)) == (
        "eth9",
        ["192.0.2.7"],
        "192.0.2.0/24",
    )


def test_plan_for_all_interfaces_announces_every_non_loopback_address() -> None:
    plan = plan_interfaces("0.0.0.0", ADAPTERS)
    assert plan.interfaces is InterfaceChoice.All
    assert plan.addresses == ["192.0.2.7"]
    assert plan.device is None


@pytest.mark.parametrize("host", ["10.9.9.9", "::1", "localhost", ""])
def test_plan_refuses_a_host_that_is_not_a_local_ipv4_address(host: str) -> None:
    with pytest.raises(DiscoveryError):
        plan_interfaces(host, ADAPTERS)


# ---------------------------------------------------------------------- real zeroconf on lo


def _config(fp: str, port: int, name: str = "peer") -> DiscoveryConfig:
    return DiscoveryConfig(
        host="127.0.0.1",
        port=port,
        node_id=os.urandom(16).hex(),
        cluster_fingerprint=fp,
        protocol_version=1,
        name=name,
    )


def _collect(into: dict[str, PeerInfo]) -> Callable[[PeerInfo], None]:
    def found(peer: PeerInfo) -> None:
        into[peer.node_id] = peer

    return found


@pytest.mark.parametrize(
    "props",
    [
        {"id": "ab" * 16, "fp": "f" * 16, "v": "\u00b2"},  # a digit to isdigit, not to int()
        {"id": "ab cd ef 01 23 45 67 89 abcdef01", "fp": "f" * 16, "v": "1"},  # fromhex takes it
        {"id": "zz" * 16, "fp": "f" * 16, "v": "1"},
        {b"id": b"\xff" * 32, b"fp": b"\xfe", b"v": b"1"},
        {"id": "ab" * 16, "v": "1"},
    ],
)
def test_a_malformed_announcement_is_ignored_not_raised(props: dict[Any, Any]) -> None:
    from zeroconf.asyncio import AsyncServiceInfo

    from metaopt.peer._discovery import SERVICE_TYPE

    disc = Discovery(_config(_fingerprint(), 1, "me"), on_found=lambda p: None)
    name = f"x.{SERVICE_TYPE}"
    info = AsyncServiceInfo(SERVICE_TYPE, name, port=9, properties=props)
    info.addresses = [socket.inet_aton("127.0.0.1")]
    assert disc._parse(name, info) is None
    good = {"id": "ab" * 16, "fp": "f" * 16, "v": "1"}
    info = AsyncServiceInfo(SERVICE_TYPE, name, port=9, properties=good)
    info.addresses = [socket.inet_aton("127.0.0.1")]
    assert disc._parse(name, info) is not None  # the same, well formed, is a peer


async def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


@pytest.mark.integration
@pytest.mark.asyncio
async def test_three_peers_find_each_other_on_loopback_and_not_themselves() -> None:
    fp = _fingerprint()
    configs = [_config(fp, 17000 + i, f"p{i}.example") for i in range(3)]
    found: list[dict[str, PeerInfo]] = [{} for _ in configs]
    peers = [Discovery(c, on_found=_collect(f)) for c, f in zip(configs, found, strict=True)]
    try:
        await asyncio.gather(*(p.start() for p in peers))
        for peer in peers:
            assert peer.sockets
            assert {_bound_device(s) for s in peer.sockets} == {"lo"}
            for sock in peer.sockets:
                assert sock.getsockname()[0] in ("0.0.0.0", "127.0.0.1")
        assert await _wait_until(lambda: all(len(f) == 2 for f in found), timeout=20)
        if shutil.which("ss") is not None:
            bound = _own_udp_sockets(5353)
            assert bound and all("%lo:5353" in line for line in bound), bound
    finally:
        await asyncio.gather(*(p.stop() for p in peers))
    for i, config in enumerate(configs):
        others = {c.node_id: c for j, c in enumerate(configs) if j != i}
        assert set(found[i]) == set(others)
        for node_id, info in found[i].items():
            assert (info.host, info.port) == ("127.0.0.1", others[node_id].port)
            assert info.fingerprint == fp and info.protocol_version == 1
            assert info.name == others[node_id].name.replace(".", "-")
        assert config.node_id not in found[i]
    assert all(not p.sockets for p in peers)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_peer_of_another_cluster_is_reported_foreign_once_never_found() -> None:
    mine, theirs = _fingerprint(), _fingerprint()
    found: list[PeerInfo] = []
    foreign: list[PeerInfo] = []
    us = Discovery(_config(mine, 17100, "us"), on_found=found.append, on_foreign=foreign.append)
    stranger_config = _config(theirs, 17101, "them")
    stranger = Discovery(stranger_config, on_found=lambda p: None)
    try:
        await asyncio.gather(us.start(), stranger.start())
        # Peers of other suites may be announcing on lo too: they are foreign as well.
        assert await _wait_until(lambda: any(p.fingerprint == theirs for p in foreign), 20)
        await asyncio.sleep(1.0)  # further announcements of the stranger must stay silent
    finally:
        await asyncio.gather(us.stop(), stranger.stop())
    assert found == []
    reported = [p for p in foreign if p.fingerprint == theirs]
    assert [p.node_id for p in reported] == [stranger_config.node_id]
    assert (reported[0].host, reported[0].port, reported[0].name) == ("127.0.0.1", 17101, "them")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_foreign_peer_that_says_goodbye_is_no_longer_what_mdns_found() -> None:
    """A peer alone is told mDNS found only peers of another cluster (or release) while they
    announce; once they leave, that is no longer so (it was said for good)."""
    us = Discovery(_config(_fingerprint(), 17110, "us"), on_found=lambda p: None)
    stranger = Discovery(_config(_fingerprint(), 17111, "them"), on_found=lambda p: None)
    try:
        await asyncio.gather(us.start(), stranger.start())
        assert await _wait_until(lambda: stranger.service_name in us._ignoring, 20)
        assert "cluster" in us.ignored()
        await stranger.stop()  # its goodbye
        assert await _wait_until(lambda: stranger.service_name not in us._ignoring, 20)
    finally:
        await asyncio.gather(us.stop(), stranger.stop())


def test_an_ignored_announcement_is_forgotten_when_removed_or_when_it_matches_again() -> None:
    config = _config(_fingerprint(), 17112, "us")
    us = Discovery(config, on_found=lambda p: None)
    old = PeerInfo("cd" * 16, "127.0.0.1", 9, config.cluster_fingerprint, 99, "old")
    foreign = PeerInfo("ef" * 16, "127.0.0.1", 10, "other", config.protocol_version, "f")
    us._deliver(old, service="old._metaopt._tcp.local.")
    us._deliver(foreign, service="f._metaopt._tcp.local.")
    assert us.ignored() == ["release", "cluster"]
    us._on_state_change(None, "_metaopt._tcp.local.", "f._metaopt._tcp.local.", REMOVED)
    assert us.ignored() == ["release"]
    # The old peer upgraded in place: the same name, now of this release.
    upgraded = replace(old, protocol_version=config.protocol_version)
    us._deliver(upgraded, service="old._metaopt._tcp.local.")
    assert us.ignored() == []


@pytest.mark.integration
@pytest.mark.asyncio
async def test_stop_before_start_and_twice_is_harmless() -> None:
    peer = Discovery(_config(_fingerprint(), 17200), on_found=lambda p: None)
    await peer.stop()
    await peer.start()
    await peer.stop()
    await peer.stop()
    assert peer.sockets == []


@pytest.mark.integration
@pytest.mark.asyncio
async def test_start_fails_closed_when_its_sockets_cannot_be_pinned_to_the_interface() -> None:
    config = _config(_fingerprint(), 17300)
    peer = Discovery(
        config, on_found=lambda p: None, adapters=lambda: [("mo-nosuchdev", "127.0.0.1", 8)]
    )
    with pytest.raises(DiscoveryError, match="cannot restrict mDNS to mo-nosuchdev"):
        await peer.start()
    assert peer.sockets == []
    if shutil.which("ss") is not None:
        assert _own_udp_sockets(5353) == []


def _own_udp_sockets(port: int) -> list[str]:
    out = subprocess.run(["ss", "-Hulpn"], capture_output=True, text=True, timeout=10).stdout
    return [
        line for line in out.splitlines() if f"pid={os.getpid()}," in line and f":{port} " in line
    ]


@pytest.mark.asyncio
async def test_start_refuses_an_address_this_machine_does_not_have() -> None:
    config = DiscoveryConfig("198.51.100.77", 1, "00" * 16, "fp", 1, "x")
    with pytest.raises(DiscoveryError, match="not an address of this machine"):
        await Discovery(config, on_found=lambda p: None).start()


# ------------------------------------------------------------- real multicast across netns


def _netns_unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"mo-test-{os.getpid()}-check"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[list[tuple[str, str]]]:
    """Three namespaces on one bridge (inside a fourth namespace): [(namespace, address)]."""
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"mo-test-{os.getpid()}-{next(_names)}"
    hub = f"{tag}-hub"
    spaces = [f"{tag}-p{i}" for i in range(3)]
    created: list[str] = []
    try:
        for ns in [hub, *spaces]:
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("-n", hub, "link", "add", "mo-br", "type", "bridge")
        _ip("-n", hub, "link", "set", "mo-br", "up")
        members = []
        for i, ns in enumerate(spaces):
            # Both ends are created inside our namespaces: the host's own links never change.
            _ip("link", "add", "mo-v", "netns", ns, "type", "veth", "peer", "name", f"mo-h{i}",
                "netns", hub)  # fmt: skip
            _ip("-n", hub, "link", "set", f"mo-h{i}", "master", "mo-br", "up")
            _ip("-n", ns, "addr", "add", f"10.213.7.{i + 1}/24", "dev", "mo-v")
            _ip("-n", ns, "link", "set", "mo-v", "up", "multicast", "on")
            _ip("-n", ns, "link", "set", "lo", "up")
            members.append((ns, f"10.213.7.{i + 1}"))
        yield members
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _read_events(
    procs: list[subprocess.Popen[str]], done: Any, timeout: float
) -> list[list[dict[str, Any]]]:
    events: list[list[dict[str, Any]]] = [[] for _ in procs]
    sel = selectors.DefaultSelector()
    for i, proc in enumerate(procs):
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ, i)
    buffers = ["" for _ in procs]
    deadline = time.monotonic() + timeout
    while not done(events) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            chunk = key.fileobj.read()  # type: ignore[union-attr]
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buffers[key.data] += chunk
            *lines, buffers[key.data] = buffers[key.data].split("\n")
            events[key.data].extend(json.loads(line) for line in lines if line.strip())
    sel.close()
    return events


@pytest.mark.integration
@pytest.mark.netns
@pytest.mark.slow
def test_three_peers_in_separate_namespaces_find_each_other_by_multicast(
    lan: list[tuple[str, str]],
) -> None:
    fp = _fingerprint()
    root = PROBE.parents[3]
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, (ns, addr) in enumerate(lan):
            cmd = ["ip", "netns", "exec", ns, sys.executable, str(PROBE), "--host", addr,
                   "--port", str(7100 + i), "--fingerprint", fp, "--name", f"ns{i}",
                   "--seconds", "40"]  # fmt: skip
            procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
                )
            )

        def everyone_found_two(events: list[list[dict[str, Any]]]) -> bool:
            return all(
                len({e["node_id"] for e in ev if e["event"] == "found"}) >= 2 for ev in events
            )

        events = _read_events(procs, everyone_found_two, timeout=30)
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
    ready = [next(e for e in ev if e["event"] == "ready") for ev in events]
    assert all(r["devices"] == ["mo-v"] for r in ready)
    ids = [r["node_id"] for r in ready]
    for i, ev in enumerate(events):
        found = {e["node_id"]: e for e in ev if e["event"] == "found"}
        assert set(found) == set(ids) - {ids[i]}
        for j, node_id in enumerate(ids):
            if j != i:
                assert (found[node_id]["host"], found[node_id]["port"]) == (lan[j][1], 7100 + j)


def test_a_socket_error_zeroconf_reports_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    # A peer started while its interface was down logged "Error with socket 13 ...: [Errno 101]
    # Network is unreachable" and then a whole traceback.
    from zeroconf._logger import QuietLogger

    caplog.set_level(logging.DEBUG, logger="zeroconf")
    try:
        raise OSError(101, "Network is unreachable")
    except OSError as exc:
        QuietLogger.log_exception_once(exc, "Error with socket test-101): %s", exc)
    [record] = [r for r in caplog.records if r.name == "zeroconf"]
    assert record.getMessage().endswith("Network is unreachable") and record.exc_info is None
    assert "Traceback" not in caplog.text
