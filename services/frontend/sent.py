"""The bytes a response actually sent, for the access log and `registry_bytes_served_total`.

aiohttp counts what passes through a response's payload writer (`body_length`: status line,
headers and the body written with `write`). A blob sent with `loop.sendfile` — a stored
file, or a spool as it arrives — never passes through it (nor does asyncio's copy loop,
where a transport cannot sendfile). The senders record every body byte they send in
the request's `SentBytes`: the access logger adds what bypassed the writer to aiohttp's
count, and the handler counts the body bytes as served. A transfer cut short counts what
went out before it stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web


@dataclass
class SentBytes:
    past_writer: int = 0  # sendfile, or asyncio's copy loop: aiohttp's writer never saw them
    through_writer: int = 0  # body bytes written with `response.write`

    @property
    def body(self) -> int:
        return self.past_writer + self.through_writer


SENT = web.RequestKey("sent_bytes", SentBytes)


def sent_of(request: web.BaseRequest) -> SentBytes:
    """This request's tally (started at the first send)."""
    sent = request.get(SENT)
    if sent is None:
        sent = request[SENT] = SentBytes()
    return sent


def progress(file: IO[Any], offset: int, count: int) -> int:
    """Bytes of `file` from `offset` a send used, by the file position it left behind."""
    return max(0, min(count, file.tell() - offset))


async def sendfile(
    request: web.BaseRequest, transport: asyncio.Transport, file: IO[Any], offset: int, count: int
) -> None:
    """`loop.sendfile`, counted. asyncio leaves the file position after the last byte sent,
    also when it raises (its documented way to learn what went out)."""
    try:
        await asyncio.get_running_loop().sendfile(transport, file, offset, count)
    finally:
        sent_of(request).past_writer += progress(file, offset, count)


def bytes_on_the_wire(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Everything this response sent: aiohttp's count plus what went past its writer."""
    sent = request.get(SENT)
    return response.body_length + (sent.past_writer if sent is not None else 0)
