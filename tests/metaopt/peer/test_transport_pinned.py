"""Transport behaviour a mutation audit found unpinned: refusals an older release can read,
replayed error replies, the reply limit at its edge and announced past it, the byte counters,
a ticket freed when its body broke off, the connection caps' bookkeeping and warnings, a
request line over the limit, and the bound on malformed-HTTP notes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from crdt import ClusterKey, FrameCodec, FrameConfig, RecordError
from metaopt._errors import MetaoptError
from metaopt.peer._transport import (
    PATH,
    TICKET,
    Client,
    PeerUnreachable,
    RemoteError,
    Server,
    StillLoading,
    _HostCap,
    _http_log,
    _OneLineBadHttp,
    _seal,
)
from metaopt.peer._wire import LOADING, PROTOCOL_VERSION, Reply, Request, decode_reply
from tests.metaopt.peer.test_transport import (
    LIMIT,
    NODE,
    NONCE,
    _closed_at_once,
    _echo_server,
    _hold_half_open,
    _serve,
    _status_line_after,
)

pytestmark = pytest.mark.integration


def _head(codec: FrameCodec, frame: bytes) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(frame)}\r\n"
        f"{TICKET}: {base64.b64encode(codec.ticket(frame)).decode()}\r\n\r\n"
    ).encode()


@pytest.mark.asyncio
async def test_a_refusal_of_an_older_release_is_sealed_so_that_release_can_open_it() -> None:
    """An older peer binds no nonce to the reply it opens: the refusal it gets must be sealed
    unbound, or it cannot read that it runs another release (it only sees a bad reply)."""
    codec, server, port, _ = await _echo_server("sync")
    old = Request("sync", os.urandom(16), "127.0.0.1:1", b"x", protocol=3).encode()
    frame = _seal(codec, old, NONCE)
    headers = {TICKET: base64.b64encode(codec.ticket(frame)).decode()}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}{PATH}", data=frame, headers=headers) as r,
        ):
            assert r.status == 200
            data = await r.read()
    finally:
        await server.stop()
    reply = decode_reply(codec.open(data, now=time.time()))  # opened as version 3 would
    assert not reply.ok and "against version" in (reply.error or "")


@pytest.mark.asyncio
async def test_an_unbound_refusal_of_our_own_release_is_not_taken_as_an_answer() -> None:
    """Only a peer of another release answers unbound. An unbound refusal carrying our own
    version (one our peers sent an older peer, recorded and replayed) is no answer from the
    peer called: it must not pass for a refusal of this request."""
    await _unbound_reply_is_no_answer(
        Reply(False, error="busy: a session is under way", protocol=PROTOCOL_VERSION)
    )


async def _unbound_reply_is_no_answer(reply: Reply) -> None:
    """A peer that answers every call with reply, sealed but bound to no request: the
    client must say the reply was not to this request."""
    key = ClusterKey.generate(os.urandom(32))
    sealer = FrameCodec([key])

    async def unbound(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=_seal(sealer, reply.encode(), os.urandom(16)))

    runner, addr = await _serve(unbound)
    client = Client(FrameCodec([key]), os.urandom(16), "", timeout=10)
    try:
        with pytest.raises(PeerUnreachable, match="not to this request"):
            await client.call(addr, "sync")
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_an_unbound_reply_that_is_not_a_refusal_is_not_taken_for_another_release() -> None:
    """An unbound reply is read only to name the release that refused us: an unbound "ok"
    (replayed, or forged by a key holder of an old release) is no answer at all."""
    await _unbound_reply_is_no_answer(Reply(True, "done", protocol=3))


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [True, False])
async def test_a_reply_of_exactly_the_frame_limit_is_read(chunked: bool) -> None:
    """The frame limit is the largest frame allowed, not the first refused: a peer's reply
    that fills it exactly is a valid answer."""
    key = ClusterKey.generate(os.urandom(32))
    config = FrameConfig(max_frame_bytes=LIMIT)
    sealer = FrameCodec([key])  # (no limit of LIMIT: it tries frames a little over it)

    async def exact(request: web.Request) -> web.StreamResponse:
        nonce = sealer.open_frame(await request.read(), now=time.time()).nonce
        for pad in range(LIMIT, 0, -1):
            body = _seal(sealer, Reply(True, b"x" * pad).encode(), os.urandom(16), nonce)
            if len(body) == LIMIT:
                break
        else:
            raise AssertionError("no padding makes a frame of exactly LIMIT bytes")
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = LIMIT
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    runner, addr = await _serve(exact)
    client = Client(FrameCodec([key], config), os.urandom(16), "", timeout=10)
    try:
        body = await client.call(addr, "sync")
        assert isinstance(body, bytes) and set(body) == {ord("x")}
        assert client.bytes_in == LIMIT
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_reply_announced_over_the_limit_is_refused_before_its_body_comes() -> None:
    """A Content-Length over the frame limit is refused on the headers: the client does not
    wait out its timeout for a body it would refuse anyway."""
    release = asyncio.Event()

    async def announce(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse()
        response.content_length = 10 * LIMIT
        await response.prepare(request)
        await release.wait()  # and never the body
        return response

    runner, addr = await _serve(announce)
    codec = FrameCodec([ClusterKey.generate(os.urandom(32))], FrameConfig(max_frame_bytes=LIMIT))
    client = Client(codec, os.urandom(16), "127.0.0.1:1", timeout=30)
    try:
        with pytest.raises(PeerUnreachable, match=f"announced a {10 * LIMIT}-byte reply"):
            await client.call(addr, "gossip", [])
    finally:
        release.set()
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_both_sides_count_the_bytes_of_each_exchange() -> None:
    """`peer status` shows the bytes a peer sent and received: the server counts each request
    frame in and each reply out, the client the same frames the other way."""
    codec, server, port, _ = await _echo_server()
    client = Client(codec, os.urandom(16), "127.0.0.1:1", timeout=10)
    try:
        for _ in range(3):
            assert await client.call(f"127.0.0.1:{port}", "echo", "hi") == "hi"
    finally:
        await client.close()
        await server.stop()
    assert server.bytes_in == client.bytes_out > 0
    assert server.bytes_out == client.bytes_in > 0


@pytest.mark.asyncio
async def test_a_handler_is_told_the_address_a_request_came_from() -> None:
    """A peer bound to 0.0.0.0 names itself by that address; the one it calls learns where it
    really is from the connection (Membership.sender_addr), so the remote must reach the handler."""
    codec = FrameCodec([ClusterKey.generate(os.urandom(32))])
    seen: list[str | None] = []

    async def note(message: Request) -> Any:
        seen.append(message.remote)
        return True

    server = Server(codec, {"gossip": note}, node_id=NODE)
    addr = f"127.0.0.1:{await server.start('127.0.0.1', 0)}"
    client = Client(codec, os.urandom(16), "0.0.0.0:7787", timeout=10)
    try:
        assert await client.call(addr, "gossip", [])
    finally:
        await client.close()
        await server.stop()
    assert seen == ["127.0.0.1"]


@pytest.mark.asyncio
async def test_a_ticket_whose_body_broke_off_can_be_sent_again_in_full() -> None:
    """A ticket is held only while its body is read: a request whose connection broke
    mid-body (a proxy, a flaky link) may be resent whole, not refused as a replay for good."""
    codec, server, port, frame = await _echo_server()
    head = _head(codec, frame)
    try:
        _, broken = await asyncio.open_connection("127.0.0.1", port)
        broken.write(head + frame[:10])
        await broken.drain()
        broken.close()
        statuses = []
        for _ in range(50):  # bounded: until the server has seen the hang-up
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + frame)
            status = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            statuses.append(status)
            if status.startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(0.05)
        assert statuses[-1].startswith(b"HTTP/1.1 200"), statuses
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_refused_connections_free_no_place_under_the_total_cap() -> None:
    """Only accepted connections count; a refused one, when it closes, must not hand back a
    place it never took, or refused attempts would lift the cap for everyone after them."""
    _, server, port, _ = await _echo_server(max_connections=2)
    held: list[asyncio.StreamWriter] = []
    try:
        await _hold_half_open(port, ["127.0.0.1"] * 2, held)
        for _ in range(4):
            await _closed_at_once(port)
            await asyncio.sleep(0)
    finally:
        for writer in held:
            writer.close()
        await server.stop()


def test_the_total_caps_refusals_are_one_warning_whichever_hosts_they_come_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At the total cap, refusals are the peer's state, not a host's: one warning a minute,
    not one per sending address (a sender of many addresses would flood the log)."""
    cap = _HostCap(cap=10, total=1, first_request=15.0)
    caplog.set_level(logging.WARNING, logger="metaopt.peer")
    assert cap.take("10.0.0.1")
    assert not any(cap.take(f"10.0.1.{i}") for i in range(5))
    assert [r.getMessage() for r in caplog.records] == [
        "hosts together hold 1 connections to this peer; refusing more until some close"
    ]


def test_a_host_that_closed_all_its_connections_is_forgotten_and_warned_anew(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per-host counts are dropped at zero (a sender of many addresses must not grow them for
    good), and with them the host's last warning: reaching the cap again is said again."""
    cap = _HostCap(cap=1, total=10, first_request=15.0)
    caplog.set_level(logging.WARNING, logger="metaopt.peer")
    for _ in range(2):
        assert cap.take("h") and not cap.take("h")
        cap.release("h", object())
    assert cap._open == {}  # (the memory bound itself)
    assert [r.getMessage() for r in caplog.records] == [
        "h holds 1 connections to this peer; refusing more until some close"
    ] * 2


@pytest.mark.asyncio
async def test_a_connection_closed_before_its_first_request_leaves_no_deadline_behind() -> None:
    """A connection's deadline is dropped when it closes: kept, each connection that never
    sent a request stayed in memory for the peer's life."""
    _, server, port, _ = await _echo_server()
    try:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
        for _ in range(50):  # bounded: until the server has seen them close
            if server._cap is not None and not server._cap._unserved:
                break
            await asyncio.sleep(0.05)
        assert server._cap is not None and server._cap._unserved == {}
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_a_request_line_longer_than_a_peer_sends_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request line is capped as a header line is (1 KiB): aiohttp's 8 KiB default let a
    line that never ends hold memory without a key."""
    for noted in _http_log.filters:  # (its notes are the process's: leave them as they were)
        monkeypatch.setattr(noted, "_seen", set())
    _, server, port, _ = await _echo_server()
    try:
        no_end = b"POST /v1?" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n"
        status = await _status_line_after(port, no_end)
        assert status.startswith(b"HTTP/1.0 400"), status
    finally:
        await server.stop()


def test_malformed_http_is_noted_for_a_bounded_number_of_senders() -> None:
    """One line per sender and kind, and no more than 1,024 noted: anyone can send malformed
    HTTP from many addresses, and every note is kept for the peer's life."""
    noted = _OneLineBadHttp()

    def record(remote: str) -> logging.LogRecord:
        exc = BadHttpMessage("bad")
        return logging.LogRecord(
            "metaopt.peer.http",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            (remote,),
            (type(exc), exc, None),
        )

    passed = [noted.filter(record(f"10.0.{i // 256}.{i % 256}")) for i in range(1100)]
    assert passed == [True] * 1024 + [False] * 76
    assert not noted.filter(record("10.0.0.0"))  # a sender already noted: not again


@pytest.mark.asyncio
async def test_a_connection_refused_with_a_401_is_closed_at_once() -> None:
    """A sender without a valid ticket gets its 401 and loses the connection then, not at the
    first-request deadline (15 s): else each keyless retry holds a place under the caps."""
    _, server, port, _ = await _echo_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 401")
        await asyncio.wait_for(reader.read(), 5)  # the end of the body, then the close
        assert reader.at_eof()
        writer.close()
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_an_operation_without_a_handler_is_unknown_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer peer's new operation reaches an older one as "unknown operation ...; upgrade
    this peer", which senders expect (CONTRIBUTING: `leave`): not an internal error."""
    codec, server, port, _ = await _echo_server()
    client = Client(codec, os.urandom(16), "127.0.0.1:1", timeout=10)
    try:
        with pytest.raises(RemoteError) as info:
            await client.call(f"127.0.0.1:{port}", "sync.v9", b"x")
    finally:
        await client.close()
        await server.stop()
    assert str(info.value).endswith("unknown operation 'sync.v9'; upgrade this peer")
    assert not [r for r in caplog.records if r.exc_info]


@contextlib.asynccontextmanager
async def _refusing(op: str, error: Exception) -> AsyncIterator[tuple[Client, str]]:
    """A started server whose one handler, op, raises error, and a client of it: (client, its
    address); both closed after."""
    codec = FrameCodec([ClusterKey.generate(os.urandom(32))])

    async def refuse(message: Request) -> Any:
        raise error

    server = Server(codec, {op: refuse}, node_id=NODE)
    addr = f"127.0.0.1:{await server.start('127.0.0.1', 0)}"
    client = Client(codec, os.urandom(16), "", timeout=10)
    try:
        yield client, addr
    finally:
        await client.close()
        await server.stop()


@pytest.mark.asyncio
async def test_a_handlers_refusal_is_its_message_as_it_is_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A MetaoptError is a handler saying no (busy, loading, a bad name): the sender gets its
    one line as the handler wrote it, and the peer's log no traceback of a "failed" handler."""
    busy = MetaoptError("busy: this peer has a session with yours under way")
    async with _refusing("sync", busy) as (client, addr):
        with pytest.raises(RemoteError) as info:
            await client.call(addr, "sync")
    assert str(info.value) == f"{addr}: busy: this peer has a session with yours under way"
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.asyncio
async def test_a_sealed_request_carrying_a_bad_record_is_refused_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A RecordError, as a ProtocolError, is the sender breaking the protocol: refused with one
    warning and no traceback (a handler bug's report would alarm whoever reads the log)."""
    bad = RecordError("a record's key does not match its body")
    async with _refusing("sync", bad) as (client, addr):
        for _ in range(2):
            with pytest.raises(RemoteError, match="RecordError: a record's key does not match"):
                await client.call(addr, "sync")
    assert not [r for r in caplog.records if r.exc_info]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("RecordError" in w for w in warnings) == 1


@pytest.mark.asyncio
async def test_a_peer_still_loading_is_told_apart_from_a_refusal() -> None:
    """The API's "loading:" refusal comes back as StillLoading, its message without the
    marker: the CLI waits on that one (and says how far the peer got) and gives up on others."""
    loading = MetaoptError(f"{LOADING} the peer is still loading its history (1 of about 9)")
    async with _refusing("api.status", loading) as (client, addr):
        with pytest.raises(StillLoading) as info:
            await client.call(addr, "api.status", to=NODE)
    assert str(info.value) == "the peer is still loading its history (1 of about 9)"
