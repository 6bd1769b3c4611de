"""The upstream session's connector: plain-TCP connections read up to 1 MiB per `recv`.

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
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

RECV_SIZE = 1024 * 1024


class UpstreamConnector(aiohttp.TCPConnector):
    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        reader: Any = transport  # asyncio's _SelectorSocketTransport, when plain TCP
        if isinstance(getattr(reader, "max_size", None), int):
            reader.max_size = max(reader.max_size, RECV_SIZE)
        return transport, protocol
