"""A blob body read straight from its socket, in a thread of its own.

Through aiohttp a body reaches the event loop in reads of at most 1 MiB. Each read is
parsed, copied, joined and handed to another thread to be hashed and written. For one cold
blob that costs the loop ~1.3 CPU s per GB, and on 2 cores it is the bound
(bench/RESULTS.md, issue 16). A plain-HTTP response with a Content-Length needs none of it.
Once aiohttp has parsed the headers, the connection is taken over:
- the bytes aiohttp already holds are taken first;
- its transport stops reading;
- a thread reads the socket (`recv_into` one reused buffer, the GIL released);
- each piece goes to the sink (hash, spool write), then its size goes to the event loop.

The connection is closed at the end, because its parser never saw the body. TLS, chunked
and length-less bodies keep aiohttp's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import aiohttp

# One hand-off to the event loop per this many bytes at least (or the body's end): enough to
# keep the loop's wake-ups rare, little enough that readers see progress on a slow upstream.
HANDOFF_BYTES = 512 * 1024
RECV_BUFFER = 1024 * 1024

Sink = Callable[[memoryview], None]
Progress = Callable[[int], None]


class SocketReadFailed(Exception):
    """The upstream's socket failed or closed early (not the sink: its errors pass as is)."""

    def __init__(self, error: BaseException, received: int):
        super().__init__(f"{error!r} after {received} bytes")
        self.error = error
        self.received = received


class SocketBody:
    """The rest of one response's body, to be read from its socket exactly once."""

    def __init__(self, response: aiohttp.ClientResponse, size: int, read_timeout: float | None):
        self._response = response
        self.size = size
        self._read_timeout = read_timeout
        self._stopping = threading.Event()

    @staticmethod
    def of(response: aiohttp.ClientResponse, read_timeout: float | None) -> SocketBody | None:
        """The socket body of `response`, or None when aiohttp's path must be kept."""
        size = response.content_length
        connection = response.connection
        if size is None or connection is None or connection.transport is None:
            return None
        if response.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            return None
        transport = connection.transport
        if transport.get_extra_info("ssl_object") is not None:
            return None
        if transport.get_extra_info("socket") is None:
            return None
        return SocketBody(response, size, read_timeout)

    async def pump(self, sink: Sink, progress: Progress) -> int:
        """Feed the whole body to `sink` (in the thread) and report each piece's size to
        `progress` (on the loop, in order, after the sink has it). Returns the bytes read."""
        loop = asyncio.get_running_loop()
        connection = self._response.connection
        assert connection is not None and connection.transport is not None
        transport = connection.transport
        # Ordering: take what aiohttp already read, then stop its reading, with no await in
        # between, so that no byte is read by both.
        held = self._response.content.read_nowait(-1)
        connection.protocol.pause_reading()  # type: ignore[union-attr]
        transport_socket: Any = transport.get_extra_info("socket")
        raw = socket.socket(fileno=os.dup(transport_socket.fileno()))
        raw.settimeout(self._read_timeout)
        done: asyncio.Future[int] = loop.create_future()

        def finish(result: int | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result or 0)

        def report(size: int) -> None:
            loop.call_soon_threadsafe(progress, size)

        def run() -> None:
            result: tuple[int | None, BaseException | None]
            try:
                result = (self._read(raw, held, sink, report), None)
            except BaseException as error:
                result = (None, error)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(finish, *result)

        thread = threading.Thread(target=run, name="blob-socket", daemon=True)
        thread.start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            # Stop the thread before the caller closes the sink's file under it.
            self._stopping.set()
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(BaseException):
                await done
            raise
        finally:
            raw.close()
            self._response.close()  # the parser never saw the body: the connection is spent

    def _read(self, raw: socket.socket, held: bytes, sink: Sink, progress: Progress) -> int:
        received = 0
        if held:
            sink(memoryview(held)[: self.size])
            received = min(len(held), self.size)
            progress(received)
        buffer = memoryview(bytearray(RECV_BUFFER))
        while received < self.size:
            filled = 0
            want = min(RECV_BUFFER, self.size - received)
            while filled < HANDOFF_BYTES and filled < want:
                if self._stopping.is_set():
                    raise SocketReadFailed(ConnectionAbortedError("stopped"), received + filled)
                try:
                    count = raw.recv_into(buffer[filled:want])
                except OSError as error:
                    raise SocketReadFailed(error, received + filled) from error
                if count == 0:
                    raise SocketReadFailed(
                        ConnectionResetError("the upstream closed the connection"),
                        received + filled,
                    )
                filled += count
            sink(buffer[:filled])
            received += filled
            progress(filled)
        return received
