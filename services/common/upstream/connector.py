"""The upstream session's connector: connections go where the target guard approved, and
plain-TCP connections read up to 1 MiB per `recv`.

A host the guard checked (a redirect target, a token realm) is connected to at the
addresses the guard approved (`targets.AddressPins`), without a second lookup; every other
host (the configured upstreams) is resolved as usual.

asyncio's socket transport reads at most `max_size` bytes (256 KiB) per `recv` and hands
each read to aiohttp's parser, then to the spool: every read costs the event loop a round
of callbacks, a parser call and a wake-up of the spool's task. A blob arriving faster than
that is read in up to 1 MiB instead (measured, 20 cold blobs at once: 0.3 CPU s/GB less
and 16-18 % more throughput; one blob: within noise; bench/RESULTS.md). `max_size` is the
transport's attribute for exactly this size; a transport without one (TLS, other event
loops) is left as it is.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.resolver import DefaultResolver

from .targets import AddressPins

RECV_SIZE = 1024 * 1024


class PinnedResolver(AbstractResolver):
    """Answers a pinned host with its pinned addresses; asks `fallback` for the others."""

    def __init__(self, pins: AddressPins, fallback: AbstractResolver | None = None):
        self._pins = pins
        self._fallback = fallback or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = self._pins.get(host)
        if pinned is None:
            return await self._fallback.resolve(host, port, family)
        results: list[ResolveResult] = []
        for address in pinned:
            address_family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=str(address),
                        port=port,
                        family=address_family,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                )
        if not results:
            raise OSError(f"no approved address of {host} for address family {family!r}")
        return results

    async def close(self) -> None:
        await self._fallback.close()


class UpstreamConnector(aiohttp.TCPConnector):
    def __init__(self, pins: AddressPins | None = None, **kwargs: Any):
        super().__init__(resolver=PinnedResolver(pins or AddressPins()), **kwargs)

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        reader: Any = transport  # asyncio's _SelectorSocketTransport, when plain TCP
        if isinstance(getattr(reader, "max_size", None), int):
            reader.max_size = max(reader.max_size, RECV_SIZE)
        return transport, protocol
