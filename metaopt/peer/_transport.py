"""HTTP between peers (and from the CLI to its peer): one POST route carrying sealed frames.

The frame codec is sans-IO; this module is the only place that gives it the wall clock and
fresh nonces, and the only place aiohttp appears on either side of a peer conversation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import errno
import io
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from crdt import FrameCodec, FrameError, ProtocolError, RecordError, TamperedFrame
from metaopt._errors import MetaoptError
from metaopt.peer._once import OnceEach
from metaopt.peer._wire import (
    LOADING,
    MISADDRESSED,
    PROTOCOL_VERSION,
    Reply,
    Request,
    WireError,
    decode_reply,
    decode_request,
    needs_addressee,
    other_version,
)

__all__ = [
    "Busy",
    "Client",
    "Misaddressed",
    "OtherRelease",
    "PeerUnreachable",
    "Refused",
    "RemoteError",
    "Server",
    "StillLoading",
]

log = logging.getLogger("metaopt.peer")
_MAX_NOTED = 1024  # senders and kinds of malformed HTTP noted; beyond, the rest is dropped
PATH = "/v1"
# A body at least this long is records on their way (a gossip message or its reply is a few
# KiB): while one is read, this peer is still being sent a history (see CatchUp).
LARGE_BODY = 1 << 16
# A message of an anti-entropy session says so here: such a request, if large, may be put off
# while this peer catches up and reads another large body (see Server._put_off). A hint only:
# the frame is what is obeyed.
DEFERRABLE = "X-Metaopt-Deferrable"
# Every request carries its frame's ticket here (FrameCodec.ticket): the server checks it
# before reading the body, so only holders of the cluster key can make a peer hold a frame.
TICKET = "X-Metaopt-Ticket"
# Seconds without a refusal from (or of) a sender after which the next one is logged again:
# a new incident rather than the same one retried every few seconds.
REFUSAL_QUIET = 300.0
Handler = Callable[[Request], Awaitable[Any]]


class PeerUnreachable(MetaoptError):
    """No answer from a peer (refused, timed out, or not speaking our protocol)."""


class Busy(PeerUnreachable):
    """The peer put off our session's message: it catches up, taking in another message of
    records (see Server._put_off)."""


class RemoteError(MetaoptError):
    """The peer answered with an error."""


class OtherRelease(RemoteError):
    """The peer speaks another protocol version (another metaopt release)."""


class Misaddressed(RemoteError):
    """The peer that answered is not the node the request named."""


class StillLoading(RemoteError):
    """The peer is still loading its replica and answers only status and shutdown."""


class Refused(RemoteError):
    """The peer refused our frames (another cluster's key, or none it holds)."""


class _OneLineBadHttp(logging.Filter):
    """aiohttp logs every malformed HTTP request with a traceback, and anyone can send one (no
    key is needed to reach the parser): one line per sender and kind of error is enough."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[object, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError):
            # aiohttp drains what a handler left of a body, to keep the connection: a body it
            # cannot inflate raises there, after the request was answered and its refusal said.
            return False
        if not isinstance(exc, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        kind = (remote, type(exc).__name__)
        if kind in self._seen or len(self._seen) >= _MAX_NOTED:
            return False
        self._seen.add(kind)
        said = " ".join(str(exc).split())[:200].replace("%", "%%")  # its messages span lines
        record.msg = f"a malformed HTTP request from %s: {type(exc).__name__}: {said}"
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_http_log = logging.getLogger("metaopt.peer.http")
_http_log.addFilter(_OneLineBadHttp())


def _seal(codec: FrameCodec, payload: bytes, nonce: bytes, associated: bytes = b"") -> bytes:
    return codec.seal(payload, now=time.time(), nonce=nonce, associated=associated)


class Server:
    """The aiohttp side: open the frame, dispatch on op, seal the reply."""

    def __init__(
        self,
        codec: FrameCodec,
        handlers: dict[str, Handler],
        max_bytes: int = 64 << 20,
        *,
        node_id: bytes,
        protocol: int | None = PROTOCOL_VERSION,
        receiving_elsewhere: Callable[[], int] = lambda: 0,
        catching_up: Callable[[], bool] = lambda: True,
    ) -> None:
        """node_id: this peer's, which a request may name and some must (needs_addressee).
        protocol: the version its replies carry (another only in tests of mixed versions).
        receiving_elsewhere: the large bodies this peer takes in otherwise (its client's
        answers, its own sessions under way), and catching_up: whether it catches up now
        (see _put_off)."""
        self._receiving_elsewhere = receiving_elsewhere
        self._max_bytes = max_bytes
        self._catching_up = catching_up
        self._codec = codec
        self._node_id = node_id
        self._listener: asyncio.Server | None = None
        self.max_connections_per_host = 256
        self.max_connections = 4096  # from all hosts together
        # Seconds a connection may take to send its first request's headers (see _HostCap).
        self.first_request_timeout = 15.0
        # Seconds a request's body may send nothing before it is given up (see _read_body).
        self.stall_timeout = 10.0
        self._cap: _HostCap | None = None
        self._protocol = protocol
        self._handlers = handlers
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=max_bytes)
        self.app.router.add_post(PATH, self._handle, expect_handler=self._expect)
        self.rejected = 0
        self._refused = OnceEach(quiet=REFUSAL_QUIET)  # (sender, error) already logged
        self.bytes_in = 0
        self.bytes_out = 0
        self.receiving = 0  # request bodies of LARGE_BODY or more being read now
        self.put_off = 0  # large deferrable requests answered 503 unread (see _put_off)
        # Tickets whose frames are being read. A ticket is remembered (its nonce) only once its
        # frame opens, and it is not secret: one copied off the network let 10 connections at
        # once each hold a 40 MiB body of junk (see _ticket).
        self._reading: set[bytes] = set()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            ticket = self._ticket(request)
            if ticket in self._reading:
                raise WireError("a ticket already in use on another connection: a replay; drop it")
            if request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
                # No peer compresses its frames. aiohttp would inflate the body, and one that
                # does not inflate was a 500 with two tracebacks in the log, repeatable with
                # one ticket seen on the wire (its frame never opens, so it is not spent).
                raise WireError("a compressed body; a peer sends its frame as it is")
            # A sender with the key: its connection keeps no deadline (a large frame may take
            # long to send). Lifted for any request, one without a ticket a minute kept a
            # connection for good, and 4,096 of them the peer's own CLI out.
            if self._cap is not None:
                self._cap.served(request.transport)
            large = (request.content_length or 0) >= LARGE_BODY
            self._reading.add(ticket)
            self.receiving += large
            try:
                frame = await self._read_body(request)
            except (ConnectionError, web.RequestPayloadError) as exc:  # hung up mid-body
                log.debug("a request from %s broke off: %s", request.remote, exc)
                return web.Response(status=400, text="the request body broke off")
            except TimeoutError:
                # Closed at once: a reply would wait for aiohttp's lingering read of the rest.
                log.debug("a request from %s stalled mid-body; closed", request.remote)
                request.protocol.force_close()
                return web.Response(status=408, text="the request body stalled")
            finally:
                self._reading.discard(ticket)
                self.receiving -= large
            self.bytes_in += len(frame)
            now = time.time()
            opened = self._codec.open_frame(frame, now=now, ticket=ticket)
            lag = now - opened.time_ms / 1000
            message = dataclasses.replace(
                decode_request(opened.payload), remote=request.remote, lag=lag
            )
        except (FrameError, WireError) as exc:
            self.rejected += 1
            self._log_refusal(request.remote, type(exc).__name__, "rejected", exc)
            denied = web.Response(status=401, text=f"{type(exc).__name__}: {exc}")
            denied.force_close()  # (nothing more to hear on a connection that sent that)
            return denied
        handler = self._handlers.get(message.op)
        mismatch = other_version(message.protocol)
        misaddressed = self._misaddressed(message)
        # (By the address the sender gives as well: two peers of an older release on one
        # machine were one line.)
        sender = f"{request.remote} ({message.addr})" if message.addr else request.remote
        if mismatch is not None:
            self._log_refusal(sender, "protocol", "refused", mismatch)
            reply = Reply(False, error=f"refused, {mismatch}")
        elif misaddressed is not None:
            # Routine after a peer restarted here with a new data directory: the others call
            # its predecessor until they hear of it (and then call again naming nobody).
            self._log_refusal(sender, "misaddressed", "refused", misaddressed, logging.INFO)
            reply = Reply(False, error=f"{MISADDRESSED} {misaddressed}")
        elif handler is None:
            reply = Reply(False, error=f"unknown operation {message.op!r}; upgrade this peer")
        else:
            try:
                reply = Reply(True, await handler(message))
            except MetaoptError as exc:
                reply = Reply(False, error=str(exc))
            except (ProtocolError, RecordError) as exc:  # sealed, but breaking the protocol
                why = f"{type(exc).__name__}: {exc}"
                self._log_refusal(sender, type(exc).__name__, "refused", why)
                reply = Reply(False, error=why)
            except Exception as exc:  # a bug in one handler must not take the peer down
                log.exception("handler %s failed", message.op)
                reply = Reply(False, error=f"internal error in {message.op}: {exc}")
        reply = dataclasses.replace(reply, protocol=self._protocol)
        # Bound to the request: a reply recorded earlier cannot answer this one. Not for a
        # peer of another version, which could not open it to read why it was refused.
        bound = opened.nonce if mismatch is None else b""
        try:
            body = _seal(self._codec, reply.encode(), os.urandom(16), bound)
        except FrameError as exc:  # a reply over the frame limit: say so, in a frame that fits
            log.warning("the reply to %s does not fit in a frame: %s", message.op, exc)
            refusal = Reply(False, error=f"the reply to {message.op} is too large: {exc}")
            refusal = dataclasses.replace(refusal, protocol=self._protocol)
            body = _seal(self._codec, refusal.encode(), os.urandom(16), bound)
        self.bytes_out += len(body)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _read_body(self, request: web.Request) -> bytes:
        """The request's body; TimeoutError if it stalls for stall_timeout, or ends too late.

        A frame older than max_skew is refused, and its time was within max_skew of this
        clock when its ticket passed: past twice that, no body can open. A sender that stopped
        mid-body (paused, cut off without a FIN, or a copied ticket) held its connection, and
        its place under the caps, for good; and, counted as records on their way, it held
        this peer's catch-up and put off every other peer's session for those 240 s (a
        review). Its bytes stopping for stall_timeout, it is given up, as a client gives up an
        answer.
        """
        body = bytearray()
        async with asyncio.timeout(2 * self._codec.config.max_skew):
            while True:
                try:
                    async with asyncio.timeout(self.stall_timeout):
                        piece = await request.content.readany()
                except TimeoutError:
                    # A hold of this peer's loop past the timeout wakes to the sender's bytes
                    # and the timer in one turn, and the timer wins: a live body was given up
                    # (a review). Stalled only if nothing came meanwhile.
                    piece = request.content.read_nowait()
                    if not piece and not request.content.at_eof():
                        raise
                if not piece:
                    return bytes(body)
                body += piece
                if len(body) > self._max_bytes:  # (as request.read() refused one)
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=self._max_bytes, actual_size=len(body)
                    )

    async def _expect(self, request: web.Request) -> web.Response | None:
        """Before a body is sent (``Expect: 100-continue``): put it off (see _put_off), or ask
        for it as aiohttp does.

        Put off once its bytes were coming, a 4 MiB message crossed the slow link all the
        same: the sender's kernel held most of it (its send buffer grows to megabytes) and
        sent it after the close, and over 1 Mbit/s a joiner received 46-52 MB for a history
        of 15, the bytes of refused messages in the gaps its catch-up took for silence.
        """
        if (request.content_length or 0) >= LARGE_BODY and self._put_off(request):
            self.put_off += 1
            log.debug("put off %d bytes of records from %s", request.content_length, request.remote)
            busy = web.Response(status=503, text="reading another peer's records; try later")
            busy.force_close()  # (no body follows: the sender waits for a 100 that never comes)
            return busy
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (as aiohttp's own: the answer's body is still to come)
        return None

    def _put_off(self, request: web.Request) -> bool:
        """Whether to answer a large request unread: a message of another peer's session with
        this one, which catches up and takes in another large body already (or has a session
        of its own under way, whose next answer would share the link: two 4 MiB messages side
        by side over 1 Mbit/s outlast the transfer timeout as three did; see
        Node._anti_entropy for the other way round).

        A joiner over a slow link was sent its history by every peer at once: its own
        session's answers, and each other peer's session with it, 4 MiB messages side by side
        sharing the link. Over 1 Mbit/s three of them took longer than the transfer timeout,
        were given up and sent again, and the joiner stalled at a third of the history; over
        2-3 Mbit/s it received 2-3.4 times the history. One at a time, each crosses at the
        link's speed, and the sender refused tries another peer in its next round.

        Only while it catches up: once caught up, one slow transfer held a near peer's
        records back for all of it (14 s where they took 0.5, a review). Never a push: the
        pieces of one burst (a code bundle) arrive together, and put off each other.
        """
        if request.headers.get(DEFERRABLE) != "1" or not self._catching_up():
            return False
        return self.receiving + self._receiving_elsewhere() > 0

    def _misaddressed(self, message: Request) -> str | None:
        """Why a request is not for this peer, or None if it is."""
        if message.to is not None and message.to != self._node_id:
            return (
                f"this is node {self._node_id.hex()[:12]}, not node {message.to.hex()[:12]}"
                " the request was for"
            )
        if message.to is None and needs_addressee(message.op):
            return f"{message.op} must name the node it is for"
        return None

    def _log_refusal(
        self, remote: str | None, kind: str, verb: str, why: object, first: int = logging.WARNING
    ) -> None:
        """A warning (or ``first``) once per sender and kind of refusal, debug lines after: a
        peer of another cluster or release retries every few seconds for ever, and one line
        says all there is to say; again after REFUSAL_QUIET seconds without one (a new
        incident: a clock stepped off a second time)."""
        level = first if self._refused.first((remote, kind)) else logging.DEBUG
        log.log(level, "%s a request from %s: %s", verb, remote, why)

    def _ticket(self, request: web.Request) -> bytes:
        """The request's checked ticket; raises WireError or FrameError before any body is read.

        Until the body is read aiohttp buffers only a few pages per connection, so a sender
        without the cluster key costs this peer next to nothing however much it sends.
        """
        try:
            ticket = base64.b64decode(request.headers.get(TICKET, ""), validate=True)
        except (binascii.Error, ValueError):
            raise WireError(
                f"the {TICKET} header is not base64; is the sender a metaopt peer?"
            ) from None
        if not ticket:
            raise WireError(f"no {TICKET} header; is the sender a metaopt peer of this version?")
        size = self._codec.check_ticket(ticket, now=time.time())
        if request.content_length != size:
            raise WireError(
                f"the ticket announces a {size}-byte frame but the body is"
                f" {request.content_length} bytes; resend it"
            )
        return ticket

    async def start(self, host: str, port: int) -> int:
        """Listen; return the bound port (useful with port 0)."""
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            logger=_http_log,
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
            max_headers=_MAX_HEADERS,
            # A peer's pooled connection idles at most 15 s (aiohttp's client), far below
            # this; aiohttp's own default let an idle one stay an hour.
            keepalive_timeout=75.0,
            # How long a stop waits for requests under way before it cancels them. aiohttp's
            # 60 s, with one sender stalled mid-body, made `metaopt peer stop` (which waits
            # 60 s too) say the peer was still stopping, and its leave notices went out late.
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        cap = self._cap = _HostCap(
            self.max_connections_per_host, self.max_connections, self.first_request_timeout
        )
        try:
            # SO_REUSEADDR lets a restarted peer rebind past TIME_WAIT; on Linux it never lets
            # two live listeners share a port, so "port in use" is still caught.
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: _CappedConnection(handlers, cap),
                host,
                port,
                reuse_address=True,
            )
        except (OSError, OverflowError) as exc:
            await self._runner.cleanup()
            in_use = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
            hint = (
                "is another peer running there? choose another --port"
                if in_use
                else "check --host (an address of this machine) and --port (0-65535)"
            )
            why = getattr(exc, "strerror", None) or exc
            raise MetaoptError(f"cannot listen on {host}:{port}: {why}; {hint}") from None
        sockets = self._listener.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()  # it closes the connections still open
            self._runner = None


_SHUTDOWN_GRACE = 3.0  # seconds a stopping server lets requests under way finish
_CONNECTIONS_PER_PEER = 16  # a client's pool per peer (Client._get_session)
# A request of a peer is a request line, a few short headers and a base64 ticket of
# TICKET_SIZE bytes. aiohttp's defaults (128 headers of 8 KiB) let a connection that never
# ends its headers hold about 2 MB: 290 of them, from two addresses, took a peer from 240 MB to
# 814 MB, which it kept.
_MAX_HEADER_LINE = 1024
_MAX_HEADERS = 32
_CAP_TOLD_EVERY = 60.0  # seconds between warnings that a host is at the cap


class _HostCap:
    """Open connections per sending host, at most ``cap`` each, and ``total`` from all
    hosts together: the share of one host bounds nothing for a sender of many addresses
    (see _CappedConnection). A connection that has not sent its first request's headers
    ``first_request`` seconds after it opened is closed: 4,096 that sent nothing were held
    for good, and the peer's own CLI could not reach it meanwhile."""

    def __init__(self, cap: int, total: int, first_request: float) -> None:
        self.cap = cap
        self.total = total
        self.first_request = first_request
        self._open: collections.Counter[str] = collections.Counter()
        self._all = 0
        self._told: dict[str, float] = {}  # host -> when its refusal was last logged
        self._unserved: dict[object, asyncio.TimerHandle] = {}  # transport -> its deadline

    def opened(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._unserved[transport] = loop.call_later(self.first_request, transport.close)

    def served(self, transport: object) -> None:
        deadline = self._unserved.pop(transport, None)
        if deadline is not None:
            deadline.cancel()

    def take(self, host: str) -> bool:
        at_cap = self._open[host] >= self.cap
        if not at_cap and self._all < self.total:
            self._open[host] += 1
            self._all += 1
            return True
        who = host if at_cap else ""  # (the total's refusals: one warning, not one a host)
        now = time.monotonic()
        if now - self._told.get(who, -math.inf) >= _CAP_TOLD_EVERY:
            self._told[who] = now
            if at_cap:
                log.warning(
                    "%s holds %d connections to this peer; refusing more until some close",
                    host,
                    self.cap,
                )
            else:
                log.warning(
                    "hosts together hold %d connections to this peer; refusing more until"
                    " some close",
                    self.total,
                )
        return False

    def release(self, host: str, transport: object) -> None:
        self.served(transport)
        self._all -= 1
        self._open[host] -= 1
        if not self._open[host]:
            del self._open[host]
            self._told.pop(host, None)


class _CappedConnection(asyncio.Protocol):
    """aiohttp's handler of one connection, unless its host holds the cap open already.

    A connection that never finishes a request costs its sender nothing and needs no key;
    aiohttp sets no deadline on receiving one. Without a cap, held connections from one host
    used up the peer's file descriptors, and no trial could start. Peers keep a few pooled
    connections each, so a cap far above that bounds one sender's share without ever being
    reached by peers.
    """

    def __init__(self, make: Callable[[], asyncio.Protocol], cap: _HostCap) -> None:
        self._make = make
        self._cap = cap
        self._host: str | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._cap.take(host):
            transport.close()
            return
        self._host = host
        self._transport = transport
        self._cap.opened(transport)
        self._inner = self._make()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._host is not None:
            self._cap.release(self._host, self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class Client:
    """Sends requests to peers; one aiohttp session per process side."""

    def __init__(
        self,
        codec: FrameCodec,
        sender: bytes,
        addr: str,
        timeout: float = 10.0,
        *,
        warn_refusals: bool = False,
        protocol: int | None = PROTOCOL_VERSION,
        bounded_replies: bool = True,
        run: bytes | None = None,
        age: Callable[[], float] | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        """warn_refusals: log (once per address) a peer refusing our frames or speaking another
        protocol version; a peer's client does, the CLI's does not (its error line says it).
        protocol: the version its requests carry (another only in tests of mixed versions).
        bounded_replies: refuse a reply that decodes to more than a peer's reply of its size
        holds (see _wire); only the CLI, reading pages of trials from its own peer, is not.
        run, age: the sending peer process's token and a reading of its age (Request.run,
        Request.age). connect_timeout: how long a new connection's handshake may take (None:
        the whole timeout; see Timing.connect_timeout). read_timeout: how long the answer
        may keep this client waiting for its next bytes, once the request is sent (None: the
        whole timeout; see Timing.transfer_timeout)."""
        self._codec = codec
        self._bounded = bounded_replies
        self._protocol = protocol
        self._sender = sender
        self._addr = addr
        self._run = run
        self._age = age
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        # sock_read starts once the request is sent: a request of megabytes to a partner cut
        # off mid-session (or paused, its buffers full) waited the whole timeout, 60 s where
        # it was 10, and held this peer's anti-entropy meanwhile (a review in namespaces). The
        # kernel ends a connection whose sent bytes stay unacknowledged this long; a slow link
        # acknowledges them as they arrive.
        self._unacked_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.receiving = 0  # answers of LARGE_BODY or more being read now
        self._refused_by = OnceEach(quiet=REFUSAL_QUIET)  # addresses whose refusal was logged
        self._warn_refusals = warn_refusals

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # A few connections to each peer are plenty (its Server caps a host's at
            # max_connections_per_host); aiohttp's default of 100 let a burst of pushes from
            # three peers on one host reach the cap and be refused.
            connector = aiohttp.TCPConnector(
                limit_per_host=_CONNECTIONS_PER_PEER, socket_factory=self._socket
            )
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    def _socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """A socket for a new connection, with the unacknowledged-data timeout set (Linux)."""
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if self._unacked_timeout is not None and option is not None:
            # (Not TCP, or a kernel without it: the total still bounds a call.)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, int(self._unacked_timeout * 1000))
        return sock

    async def call(
        self,
        addr: str,
        op: str,
        body: Any = None,
        *,
        to: bytes | None = None,
        deferrable: bool = False,
    ) -> Any:
        """Send one request to host:port and return the reply body, or raise.

        to: the node id of the peer expected there (needed for ops of needs_addressee).
        deferrable: a message of an anti-entropy session, which the peer may put off
        (raising Busy) while it catches up (see Server._put_off)."""
        request = Request(
            op,
            self._sender,
            self._addr,
            body,
            protocol=self._protocol,
            to=to,
            run=self._run,
            age=None if self._age is None else self._age(),
        )
        session = await self._get_session()
        nonce = os.urandom(16)
        frame = _seal(self._codec, request.encode(), nonce)
        self.bytes_out += len(frame)
        # An answer of LARGE_BODY or more is counted in receiving until this call returns: its
        # caller then takes it in (Replicator.storing), with no turn of the loop between.
        large = False
        try:
            async with session.post(
                f"http://{addr}{PATH}",
                data=io.BytesIO(frame),  # (sent in pieces: raw bytes past 1 MiB in one write)
                # (The peer may put it off: it says so before the body is sent; see
                # Server._expect.)
                expect100=deferrable and len(frame) >= LARGE_BODY,
                headers={
                    "Content-Type": "application/octet-stream",
                    TICKET: base64.b64encode(self._codec.ticket(frame)).decode("ascii"),
                    **({DEFERRABLE: "1"} if deferrable else {}),
                },
            ) as response:
                large = (response.content_length or 0) >= LARGE_BODY
                self.receiving += large
                if response.status == 503 and deferrable:
                    raise Busy(f"{addr} is reading another peer's records; try later")
                data = await self._read_capped(addr, response)
                self.bytes_in += len(data)
                if response.status == 401:
                    why = data.decode(errors="replace")
                    # Only another key is the key's fault. A clock off by minutes is refused
                    # too, with the key right, and its refusal says what to do (a user was
                    # told to change the key); so is a replay, or a ticket in use.
                    advice = (
                        "; if it is of this cluster, start this peer with the cluster's key"
                        " (`metaopt peer key` on a member prints the command)"
                        if why.startswith(("UnknownKey", "TamperedFrame"))
                        else ""
                    )
                    self._warn_once(addr, "%s refuses this peer's frames (%s)" + advice, why)
                    raise Refused(f"{addr} refused us: {why}")
                if response.status != 200:
                    raise PeerUnreachable(f"{addr} answered HTTP {response.status}")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: an address aiohttp cannot even form a URL from (UnicodeError, from
            # IDNA, is one): a gossiped or announced address can be anything.
            raise PeerUnreachable(f"no answer from {addr} ({type(exc).__name__})") from None
        finally:
            self.receiving -= large
        reply = self._open_reply(addr, data, nonce)
        mismatch = other_version(reply.protocol)
        if mismatch is not None:
            self._warn_once(addr, "ignoring %s: %s", mismatch)
            raise OtherRelease(f"{addr}: {mismatch}")
        if not reply.ok and (reply.error or "").startswith(MISADDRESSED):
            raise Misaddressed(f"{addr}: {(reply.error or '').removeprefix(MISADDRESSED).strip()}")
        if not reply.ok and (reply.error or "").startswith(LOADING):
            raise StillLoading((reply.error or "").removeprefix(LOADING).strip())
        if not reply.ok:
            raise RemoteError(f"{addr}: {reply.error}")
        return reply.body

    def _open_reply(self, addr: str, data: bytes, nonce: bytes) -> Reply:
        """The reply to the request sealed with nonce. A peer of another protocol version
        answers unbound; such a reply is read only to say which version refused us."""
        try:
            opened = self._codec.open(data, now=time.time(), associated=nonce)
            return decode_reply(opened, self._bounded)
        except TamperedFrame:
            try:
                older = decode_reply(self._codec.open(data, now=time.time()))
            except (FrameError, WireError):
                older = None
            if older is not None and not older.ok and older.protocol != self._protocol:
                return older
            raise PeerUnreachable(f"{addr} sent a reply that is not to this request") from None
        except (FrameError, WireError) as exc:
            raise PeerUnreachable(f"{addr} sent a bad reply: {exc}") from None

    def _warn_once(self, addr: str, message: str, why: str) -> None:
        """Log message (addr, why) once per address and incident (see Server._log_refusal), if
        this client warns: a refusing peer is retried for ever."""
        if self._warn_refusals and self._refused_by.first(addr):
            log.warning(message, addr, why)

    async def _read_capped(self, addr: str, response: aiohttp.ClientResponse) -> bytes:
        """The reply's bytes, refused past the frame limit before they are all held in memory.

        Anyone who answers at an address we were given (by gossip or mDNS, unauthenticated)
        could otherwise stream an endless body into this process until the timeout.
        """
        limit = self._codec.config.max_frame_bytes
        if (response.content_length or 0) > limit:
            raise PeerUnreachable(f"{addr} announced a {response.content_length}-byte reply")
        data = bytearray()
        async for piece in response.content.iter_chunked(1 << 16):
            data += piece
            if len(data) > limit:
                raise PeerUnreachable(f"{addr} sent a reply over {limit} bytes")
        return bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
