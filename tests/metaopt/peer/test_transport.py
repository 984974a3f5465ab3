"""The HTTP client against answers no peer would send: it gives up with PeerUnreachable."""

from __future__ import annotations

import os

import pytest
from aiohttp import web

from crdt import ClusterKey, FrameCodec, FrameConfig
from metaopt.peer._transport import Client, PeerUnreachable

pytestmark = pytest.mark.integration

LIMIT = 4096


def _client() -> Client:
    codec = FrameCodec([ClusterKey.generate(os.urandom(32))], FrameConfig(max_frame_bytes=LIMIT))
    return Client(codec, os.urandom(16), "127.0.0.1:1", timeout=10)


async def _serve(handler: web.RequestHandler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"127.0.0.1:{port}"


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [True, False])
async def test_a_reply_over_the_frame_limit_is_refused_before_it_is_all_read(
    chunked: bool,
) -> None:
    # An address learnt by gossip or mDNS can be anyone's: an endless reply must not be held.
    sent = 0

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 100 * LIMIT
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(b"\0" * LIMIT)
                sent += LIMIT
        except ConnectionError:
            pass  # the client hung up, as it should
        return response

    runner, addr = await _serve(flood)
    client = _client()
    try:
        with pytest.raises(PeerUnreachable, match="byte"):
            await client.call(addr, "gossip", [])
        assert client.bytes_in == 0
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "addr", ["h" * 64 + ".lan:7787", "\ud800:1", "127.0.0.1:-1", "127.0.0.1:1\r\nX: y"]
)
async def test_an_address_no_url_can_be_made_of_is_unreachable(addr: str) -> None:
    client = _client()
    try:
        with pytest.raises(PeerUnreachable):
            await client.call(addr, "gossip", [])
    finally:
        await client.close()
