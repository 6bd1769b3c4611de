"""Serving the application on a socket, with the limits aiohttp leaves to its user.

`serve_app` does what `web.run_app` does (an `AppRunner` that handles SIGTERM/SIGINT, a
site on the given socket, a graceful stop with `shutdown_timeout`) and adds, per process:

- `[server] max_connections`: a client connection beyond it is answered
  `503 Service Unavailable` with `Retry-After` and closed at once, so a flood of idle or
  slow connections cannot use up the process's file descriptors;
- `[server] write_timeout_secs`: a connection whose client has not accepted a byte of
  pending response data for that long is closed (its request cancelled). Pending data is what the transport
  buffers plus what the kernel holds unacknowledged (`TIOCOUTQ`), so a stall is seen both
  for buffered writes and for sendfile.

Both act on aiohttp's `web.Server` (the runner's public `server`), whose per-connection
hooks are wrapped; nothing else of aiohttp is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import ssl
import struct
import termios
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..common.config import ServerSettings

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECS = 1.0
# A stalled connection's handler gets this long to end before it is cancelled.
CUT_GRACE_SECS = 0.05
_REFUSAL_BODY = (
    b'{"errors":[{"code":"UNAVAILABLE",'
    b'"message":"too many connections to this registry process; retry"}]}'
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(_REFUSAL_BODY)
) + _REFUSAL_BODY


def pending_bytes(transport: asyncio.Transport) -> int:
    """Response bytes not yet acknowledged by the client: buffered plus in the kernel."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            pending += struct.unpack("i", raw)[0]
    return pending


class ConnectionGuard:
    """The connection cap and the write timeout of one `web.Server`."""

    def __init__(self, server: web.Server, max_connections: int, write_timeout_secs: float):
        self.max_connections = max_connections
        self.write_timeout_secs = write_timeout_secs
        self.refused = 0
        self.stalled = 0
        self._open: dict[RequestHandler, asyncio.Transport] = {}
        # Per connection: the pending byte count last seen, and since when it is unchanged.
        self._pending: dict[RequestHandler, tuple[int, float]] = {}
        self._server_made = server.connection_made
        self._server_lost = server.connection_lost
        # Instance attributes shadow the methods: aiohttp's RequestHandler calls them.
        server.connection_made = self._connection_made  # type: ignore[method-assign]
        server.connection_lost = self._connection_lost  # type: ignore[method-assign]
        self._watcher: asyncio.Task[None] | None = None
        self._cuts: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._server_made(handler, transport)
        if len(self._open) >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "client connections at max_connections=%d: refusing more (%d so far)",
                    self.max_connections,
                    self.refused,
                )
            transport.write(_REFUSAL)
            # Closed once aiohttp has started the handler's task (closing here would end
            # the connection before that task runs, which it does not expect).
            asyncio.get_running_loop().call_soon(handler.force_close)
            return
        self._open[handler] = transport

    def _connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        self._pending.pop(handler, None)
        self._server_lost(handler, exc)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECS)
            now = loop.time()
            for handler, transport in list(self._open.items()):
                self._check(handler, transport, now)

    def _check(self, handler: RequestHandler, transport: asyncio.Transport, now: float) -> None:
        if transport.is_closing():
            return
        pending = pending_bytes(transport)
        last = self._pending.get(handler)
        if pending == 0 or last is None or last[0] != pending:
            self._pending[handler] = (pending, now)
            return
        if now - last[1] >= self.write_timeout_secs:
            self.stalled += 1
            log.warning(
                "client accepted no data for %.0fs (%d bytes pending): disconnecting it "
                "(write_timeout_secs)",
                now - last[1],
                pending,
            )
            self._pending.pop(handler, None)
            # Shut the socket down first: a write or sendfile in progress fails at once and
            # the handler ends as for any client that went away. Then close it through the
            # handler. (transport.abort() under a running loop.sendfile would leave the
            # socket's writer registered, and the next connection on that fd would hang.)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            cut = asyncio.create_task(handler.shutdown(CUT_GRACE_SECS))
            self._cuts.add(cut)
            cut.add_done_callback(self._cuts.discard)


def serve_app(
    app: web.Application,
    limits: ServerSettings,
    *,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 60.0,
    print: Callable[[str], None] | None = None,
    **runner_args: Any,
) -> None:
    """Serve `app` on `sock` until SIGTERM/SIGINT, then stop gracefully (`web.run_app`'s
    life cycle, with the connection cap and write timeout of `limits`)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(
        _serve(app, limits, sock, ssl_context, shutdown_timeout, print, runner_args)
    )
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)


async def _serve(
    app: web.Application,
    limits: ServerSettings,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None,
    shutdown_timeout: float,
    print: Callable[[str], None] | None,
    runner_args: dict[str, Any],
) -> None:
    runner = web.AppRunner(
        app, handle_signals=True, shutdown_timeout=shutdown_timeout, **runner_args
    )
    await runner.setup()
    guard: ConnectionGuard | None = None
    try:
        assert runner.server is not None
        guard = ConnectionGuard(runner.server, limits.max_connections, limits.write_timeout_secs)
        guard.start()
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await site.start()
        if print is not None:
            print(f"serving on {site.name}")
        await asyncio.Event().wait()
    finally:
        if guard is not None:
            await guard.stop()
        await runner.cleanup()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
