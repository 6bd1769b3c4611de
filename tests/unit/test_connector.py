"""The upstream connector reads plain-TCP connections in up to 1 MiB per recv."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from simple_registry.common.upstream.connector import RECV_SIZE, UpstreamConnector


async def test_a_plain_connection_reads_up_to_recv_size_at_once(aiohttp_server: Any) -> None:
    app = web.Application()
    body = b"x" * (8 * RECV_SIZE)  # still arriving once the headers are in

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body)

    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession(connector=UpstreamConnector()) as session,
        session.get(server.make_url("/")) as response,
    ):
        assert response.connection is not None
        transport: Any = response.connection.transport
        assert transport.max_size == RECV_SIZE
        assert await response.read() == body
