"""mDNS discovery: announce this peer and browse for others, only on the interface it binds.

python-zeroconf binds its shared listen socket to the wildcard address even when given one
interface (python-zeroconf#193), and answers unicast queries through whichever socket they
arrived on. So after construction, before the engine reads or sends anything, every socket is
pinned to the device that owns ``config.host`` (SO_BINDTODEVICE, unprivileged since Linux 5.7)
and the listen socket stops receiving groups joined by other sockets (IP_MULTICAST_ALL=0).
If that cannot be done, discovery refuses to start rather than run on every interface; the
peer then relies on ``--join`` seeds. Peers found are checked against the bound interface's
subnet, this node's own id, the cluster fingerprint and the protocol version.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ifaddr
from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from metaopt._errors import MetaoptError
from metaopt.peer._once import OnceEach

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "DiscoveryConfig",
    "DiscoveryError",
    "PeerInfo",
    "plan_interfaces",
]

log = logging.getLogger("metaopt.peer.discovery")


class _SocketErrorsInOneLine(logging.Filter):
    """zeroconf logs a socket error (a peer started while its interface is down, say) with a
    traceback, though its message already names the error: one line is all it says."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("zeroconf").addFilter(_SocketErrorsInOneLine())

SERVICE_TYPE = "_metaopt._tcp.local."
ALL_INTERFACES = "0.0.0.0"
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux; absent from older Pythons
_MAX_LABEL = 63
_RENAME_ROOM = 3  # zeroconf's "-N" on a name clash (it tries up to a few)
_MAX_IGNORING = 256  # ignored announcements remembered (a crowded LAN of other clusters)


class DiscoveryError(MetaoptError):
    """mDNS could not be started safely on the requested interface."""


@dataclass(frozen=True)
class DiscoveryConfig:
    """Who this peer is and where it listens; the timeouts bound every zeroconf call."""

    host: str
    port: int
    node_id: str  # hex
    cluster_fingerprint: str
    protocol_version: int
    name: str
    resolve_timeout: float = 3.0
    close_timeout: float = 5.0
    max_resolving: int = 8  # concurrent resolutions; the rest wait their turn
    max_pending: int = 512  # announcements waiting beyond this are dropped (a flood guard)


@dataclass(frozen=True)
class PeerInfo:
    """A peer seen on the network, as it announced itself."""

    node_id: str
    host: str
    port: int
    fingerprint: str
    protocol_version: int
    name: str


@dataclass(frozen=True)
class InterfacePlan:
    """Where zeroconf may listen and what this peer announces."""

    interfaces: list[str] | InterfaceChoice
    addresses: list[str]
    device: str | None  # None only for the explicit all-interfaces host
    network: ipaddress.IPv4Network | None  # peers must announce an address inside it


Adapter = tuple[str, str, int]  # device name, IPv4 address, prefix length


def plan_interfaces(host: str, adapters: Sequence[Adapter]) -> InterfacePlan:
    """Decide interfaces from the bind address; pure, so the safety rule is testable.

    Args:
        host: the address the peer binds; ``0.0.0.0`` means every interface.
        adapters: this machine's IPv4 addresses as ``(device, address, prefix)``.

    Returns:
        The plan; raises DiscoveryError when ``host`` is not an IPv4 address of this machine.
    """
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise DiscoveryError(
            f"mDNS needs an IPv4 address to bind, got {host!r}; bind an address or use --join"
        ) from None
    if host == ALL_INTERFACES:
        addresses = [addr for _, addr, _ in adapters if not ipaddress.IPv4Address(addr).is_loopback]
        if not addresses:
            raise DiscoveryError("no non-loopback IPv4 address to announce; use --join")
        return InterfacePlan(InterfaceChoice.All, addresses, None, None)
    for device, addr, prefix in adapters:
        if ipaddress.IPv4Address(addr) == ip:
            network = ipaddress.IPv4Network(f"{addr}/{prefix}", strict=False)
            return InterfacePlan([host], [host], device, network)
    raise DiscoveryError(f"{host} is not an address of this machine; bind one of its addresses")


def local_adapters() -> list[Adapter]:
    """This machine's (this namespace's) IPv4 addresses."""
    found: list[Adapter] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append((str(adapter.name), ip.ip, int(ip.network_prefix)))
    return found


def _instance_label(name: str, node_id: str) -> str:
    # Dots would split the instance label; the node id suffix keeps names unique per node.
    base = "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "peer"
    suffix = f"-{node_id[:8]}"
    # DNS limits a label to 63 bytes of UTF-8, not characters: cut there, never mid-character
    # (20 CJK characters made zeroconf refuse the name, and mDNS was off). Room is kept for
    # the "-2" zeroconf appends on a name clash, which a full label would not take either.
    room = _MAX_LABEL - len(suffix) - _RENAME_ROOM
    return base.encode()[:room].decode("utf-8", "ignore") + suffix


class Discovery:
    """Announce this peer under SERVICE_TYPE and report the peers that announce themselves."""

    def __init__(
        self,
        config: DiscoveryConfig,
        on_found: Callable[[PeerInfo], None],
        on_foreign: Callable[[PeerInfo], None] | None = None,
        *,
        adapters: Callable[[], list[Adapter]] = local_adapters,
        on_self: Callable[[PeerInfo], None] | None = None,
    ) -> None:
        """on_self: told of each announcement of this node's own id (its own, and a twin's)."""
        self.config = config
        self._on_found = on_found
        self._on_foreign = on_foreign
        self._on_self = on_self
        self._adapters = adapters
        self._plan: InterfacePlan | None = None
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._resolving = asyncio.Semaphore(config.max_resolving)
        self._reported_foreign = OnceEach()  # node ids from announcements: bounded
        self._reported_version = OnceEach()
        # Announcements this peer ignores now, by service name (or node id), and why: what
        # ignored() says. Kept to those still announced (goodbyes remove them), and bounded.
        self._ignoring: dict[str, str] = {}
        self.service_name = f"{_instance_label(config.name, config.node_id)}.{SERVICE_TYPE}"

    @property
    def sockets(self) -> list[Any]:
        """Every socket zeroconf holds (for checks that nothing listens beyond the interface)."""
        if self._azc is None:
            return []
        return _engine_sockets(self._azc)

    async def start(self) -> None:
        """Open the sockets on the bound interface only, announce, and browse."""
        if self._azc is not None:
            return
        plan = plan_interfaces(self.config.host, self._adapters())
        try:
            azc = AsyncZeroconf(interfaces=plan.interfaces, ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise DiscoveryError(
                f"cannot open the mDNS sockets on {self.config.host}: {exc}"
            ) from None
        raw = _engine_sockets(azc)
        try:
            # No await since construction: the engine has not read or sent a packet yet.
            _pin_sockets(raw, plan.device)
        except BaseException:
            for sock in raw:  # closed before the engine could ever use them unrestricted
                sock.close()
            await _close_quietly(azc, self.config.close_timeout)
            raise
        self._azc, self._plan = azc, plan
        try:
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.service_name,
                port=self.config.port,
                properties={
                    "id": self.config.node_id,
                    "fp": self.config.cluster_fingerprint,
                    "v": str(self.config.protocol_version),
                },
                server=f"metaopt-{self.config.node_id[:16]}.local.",
                parsed_addresses=plan.addresses,
            )
            await asyncio.wait_for(
                azc.async_register_service(info, allow_name_change=True),
                timeout=self.config.close_timeout,
            )
            self._info = info
            self._browser = AsyncServiceBrowser(
                azc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change]
            )
        except (OSError, TimeoutError, NonUniqueNameException, BadTypeInNameException) as exc:
            await self.stop()
            raise DiscoveryError(f"mDNS announcement failed on {self.config.host}: {exc}") from None

    async def stop(self) -> None:
        """Say goodbye, stop browsing and close every socket (bounded in time)."""
        azc, self._azc = self._azc, None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if azc is not None:
            await _close_quietly(azc, self.config.close_timeout)
        self._info = None

    # ------------------------------------------------------------------------ zeroconf side

    def ignored(self) -> list[str]:
        """What mDNS found and this peer ignores ("release", "cluster": peers of another
        release or cluster), for a peer that knows no other ("mDNS found none" said to a peer
        whose only neighbours ran another release)."""
        kinds = set(self._ignoring.values())
        return [kind for kind in ("release", "cluster") if kind in kinds]

    def _on_state_change(
        self,
        zeroconf: Any,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if name == self.service_name:
            return
        if state_change is ServiceStateChange.Removed:
            # Gone (a goodbye, or its records expired): no longer what mDNS finds here.
            self._ignoring.pop(name, None)
            return
        if name in self._tasks or len(self._tasks) >= self.config.max_pending:
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks[name] = task
        task.add_done_callback(lambda _: self._tasks.pop(name, None))

    async def _resolve(self, service_type: str, name: str) -> None:
        azc = self._azc
        if azc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        try:
            async with self._resolving:
                timeout_ms = int(self.config.resolve_timeout * 1000)
                ok = await info.async_request(azc.zeroconf, timeout_ms)
        except (OSError, TimeoutError, BadTypeInNameException) as exc:
            log.debug("could not resolve %s: %s", name, exc)
            return
        if not ok:
            return
        peer = self._parse(name, info)
        if peer is not None:
            self._deliver(peer, service=name)

    def _parse(self, name: str, info: AsyncServiceInfo) -> PeerInfo | None:
        props = info.decoded_properties
        node_id, fp, version = props.get("id"), props.get("fp"), props.get("v")
        if node_id is None or fp is None or version is None or info.port is None:
            return None
        if (
            not _is_hex(node_id, 32)
            or not (version.isascii() and version.isdigit())  # "²" is a digit to isdigit
            or len(fp) > 256
        ):
            log.debug("ignoring %s: malformed TXT record", name)
            return None
        host = self._pick_address(info.parsed_addresses(IPVersion.V4Only))
        if host is None:
            log.debug("ignoring %s: no address on this peer's interface", name)
            return None
        label = name[: -len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else name
        suffix = f"-{node_id[:8]}"
        label = label[: -len(suffix)] if label.endswith(suffix) else label
        return PeerInfo(node_id.lower(), host, int(info.port), fp, int(version), label)

    def _pick_address(self, addresses: list[str]) -> str | None:
        network = self._plan.network if self._plan is not None else None
        for addr in addresses:
            ip = ipaddress.IPv4Address(addr)
            if network is None or ip in network:
                return addr
        return None

    def _deliver(self, peer: PeerInfo, service: str | None = None) -> None:
        kind = self._ignore_as(peer)
        key = service if service is not None else peer.node_id
        if kind is None:
            self._ignoring.pop(key, None)
        elif key in self._ignoring or len(self._ignoring) < _MAX_IGNORING:
            self._ignoring[key] = kind
        if peer.node_id == self.config.node_id.lower():
            if self._on_self is not None:
                self._on_self(peer)
            return
        if peer.fingerprint != self.config.cluster_fingerprint:
            if self._reported_foreign.first(peer.node_id):
                if self._on_foreign is not None:
                    self._on_foreign(peer)
                else:
                    log.info(
                        "ignoring peer %s at %s:%d of another cluster; to join it, start this"
                        " peer with that cluster's key (`metaopt peer key` there)",
                        peer.name,
                        peer.host,
                        peer.port,
                    )
            return
        if peer.protocol_version != self.config.protocol_version:
            if self._reported_version.first(peer.node_id):
                log.warning(
                    "ignoring peer %s at %s:%d: it speaks protocol %d, this peer %d;"
                    " run the same metaopt version on both",
                    peer.name,
                    peer.host,
                    peer.port,
                    peer.protocol_version,
                    self.config.protocol_version,
                )
            return
        self._on_found(peer)

    def _ignore_as(self, peer: PeerInfo) -> str | None:
        """Why this peer ignores peer ("cluster", "release"), or None if it does not."""
        if peer.node_id == self.config.node_id.lower():
            return None
        if peer.fingerprint != self.config.cluster_fingerprint:
            return "cluster"
        if peer.protocol_version != self.config.protocol_version:
            return "release"
        return None


def _is_hex(text: str, length: int) -> bool:
    """Exactly length hex digits (bytes.fromhex would also take spaces between pairs)."""
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)


def _engine_sockets(azc: AsyncZeroconf) -> list[Any]:
    """zeroconf's sockets: plain before its engine starts, asyncio's wrappers after."""
    # zeroconf has no public handle on its sockets; callers fail closed if none is found.
    engine = azc.zeroconf.engine
    candidates: list[Any] = [getattr(engine, "_listen_socket", None)]
    candidates += list(getattr(engine, "_respond_sockets", None) or [])
    wrapped = list(getattr(engine, "readers", [])) + list(getattr(engine, "senders", []))
    wrapped.append(getattr(engine, "_listen_transport", None))
    candidates += [getattr(w, "sock", None) for w in wrapped]
    found: list[Any] = []
    seen: set[int] = set()
    for sock in candidates:
        if sock is None or not hasattr(sock, "getsockopt") or sock.fileno() in seen:
            continue
        seen.add(sock.fileno())
        found.append(sock)
    return found


def _pin_sockets(sockets: list[Any], device: str | None) -> None:
    """Bind every socket to ``device`` and drop anything queued before that took effect."""
    if device is None:
        return  # the operator asked for every interface
    if not sockets:
        raise DiscoveryError("could not reach zeroconf's sockets to restrict them; use --join")
    if not sys.platform.startswith("linux"):
        raise DiscoveryError(
            "mDNS restricted to one interface needs Linux; bind 0.0.0.0 for all, or use --join"
        )
    for sock in sockets:
        if not isinstance(sock, socket.socket):
            raise DiscoveryError("zeroconf started before its sockets were restricted; use --join")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        except OSError as exc:
            raise DiscoveryError(
                f"cannot restrict mDNS to {device} ({exc.strerror}); use --join HOST:PORT"
            ) from None
        _drain(sock)


def _drain(sock: Any) -> None:
    # Datagrams that arrived between bind and SO_BINDTODEVICE may come from any interface.
    sock.setblocking(False)
    for _ in range(10_000):
        try:
            sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return


async def _close_quietly(azc: AsyncZeroconf, timeout: float) -> None:
    try:
        await asyncio.wait_for(azc.async_close(), timeout=timeout)
    except Exception as exc:  # a half-started zeroconf may fail to close; nothing is left open
        log.debug("closing zeroconf: %s", exc)
