"""A plain-HTTP blob body read straight from its socket, in a thread."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from simple_registry.common.upstream.socketbody import HANDOFF_BYTES, SocketBody, SocketReadFailed

BODY = bytes(range(256)) * (12 * 1024)  # 3 MiB


async def serve(aiohttp_server: Any, handler: Any) -> Any:
    app = web.Application()
    app.router.add_get("/", handler)
    return await aiohttp_server(app)


async def whole(_request: web.Request) -> web.Response:
    return web.Response(body=BODY)


async def test_the_whole_body_reaches_the_sink_in_order_and_each_piece_is_reported_after(
    aiohttp_server: Any,
) -> None:
    server = await serve(aiohttp_server, whole)
    hasher = hashlib.sha256()
    sunk = bytearray()
    reported: list[int] = []

    def sink(piece: memoryview) -> None:
        sunk.extend(piece)
        hasher.update(piece)

    def progress(size: int) -> None:
        reported.append(size)
        assert sum(reported) <= len(sunk)  # the sink has the bytes before the loop hears

    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as response:
        body = SocketBody.of(response, read_timeout=10)
        assert body is not None and body.size == len(BODY)
        assert await body.pump(sink, progress) == len(BODY)
    assert bytes(sunk) == BODY
    assert hasher.digest() == hashlib.sha256(BODY).digest()
    assert sum(reported) == len(BODY)
    assert all(size >= HANDOFF_BYTES for size in reported[1:-1])  # few wake-ups of the loop


async def test_a_chunked_body_keeps_aiohttps_path(aiohttp_server: Any) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(BODY[:1024])
        await response.write_eof()
        return response

    server = await serve(aiohttp_server, chunked)
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as response:
        assert SocketBody.of(response, read_timeout=10) is None
        assert await response.read() == BODY[:1024]


async def test_a_body_cut_short_fails_with_what_was_received(aiohttp_server: Any) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        await response.write(BODY[: len(BODY) // 3])
        assert request.transport is not None
        request.transport.close()
        return response

    server = await serve(aiohttp_server, cut)
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as response:
        body = SocketBody.of(response, read_timeout=10)
        assert body is not None
        with pytest.raises(SocketReadFailed) as failure:
            await body.pump(lambda _piece: None, lambda _size: None)
    assert failure.value.received == len(BODY) // 3


async def test_a_cancelled_pump_stops_its_thread_before_returning(aiohttp_server: Any) -> None:
    server = await serve(aiohttp_server, whole)
    in_sink = threading.Event()

    def sink(_piece: memoryview) -> None:
        in_sink.set()
        time.sleep(0.3)  # a slow disk (pacing): the pump is cancelled mid-write
        in_sink.clear()

    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as response:
        body = SocketBody.of(response, read_timeout=60)
        assert body is not None
        task = asyncio.create_task(body.pump(sink, lambda _size: None))
        async with asyncio.timeout(10):
            while not in_sink.is_set():
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        # Returned only once its thread had ended: the caller may close the sink's file.
        assert not in_sink.is_set(), "the pump returned while its thread was writing"
        assert not [t for t in threading.enumerate() if t.name == "blob-socket" and t.is_alive()]
