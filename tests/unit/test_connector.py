"""The upstream connector reads plain-TCP connections in up to 1 MiB per recv."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from simple_registry.common.upstream.connector import RECV_SIZE, PinnedResolver, UpstreamConnector
from simple_registry.common.upstream.errors import TargetRefused
from simple_registry.common.upstream.targets import AddressPins, TargetGuard


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


class RecordingResolver(AbstractResolver):
    """A name server that answers every name with an address no test server listens on."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host, host="127.0.0.2", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def test_a_checked_host_is_connected_to_at_the_address_the_guard_approved(
    aiohttp_server: Any,
) -> None:
    async def approved(_request: web.Request) -> web.Response:
        return web.Response(text="approved")

    app = web.Application()
    app.router.add_get("/", approved)
    server = await aiohttp_server(app, host="127.0.0.1")
    pins = AddressPins()
    pins.pin("cdn.example", [ipaddress.ip_address("127.0.0.1")])
    # The name server would answer 127.0.0.2 (nobody listens there): it is never asked.
    name_server = RecordingResolver()
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(pins, name_server))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://cdn.example:{server.port}/") as response,
    ):
        assert await response.text() == "approved"
    assert name_server.asked == []


async def test_a_host_nobody_checked_is_resolved_as_usual() -> None:
    name_server = RecordingResolver()
    resolver = PinnedResolver(AddressPins(), name_server)
    answers = await resolver.resolve("registry.example", 443, socket.AF_UNSPEC)
    assert [a["host"] for a in answers] == ["127.0.0.2"] and name_server.asked == [
        "registry.example"
    ]


async def test_a_pin_of_the_other_address_family_answers_nothing() -> None:
    pins = AddressPins()
    pins.pin("cdn.example", [ipaddress.ip_address("::1")])
    with pytest.raises(OSError, match="no approved address"):
        await PinnedResolver(pins, RecordingResolver()).resolve("cdn.example", 80, socket.AF_INET)


async def test_the_guard_pins_the_addresses_it_approved_and_not_those_it_refused() -> None:
    pins = AddressPins()
    guard = TargetGuard("203.0.113.5", (), 5.0, pins)  # a public upstream
    with pytest.raises(TargetRefused):
        await guard.check("https://localhost:5000/token", "token realm")
    assert pins.get("localhost") is None  # refused: loopback, the upstream is not
    loopback_guard = TargetGuard("127.0.0.1", (), 5.0, pins)
    await loopback_guard.check("http://LOCALHOST:5000/blob", "redirect")
    approved = pins.get("localhost")
    assert approved is not None and all(a.is_loopback for a in approved)
