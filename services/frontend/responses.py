"""Blob bytes onto the wire: sendfile of stored files, Range, ETag/If-None-Match, S3 range
streams, redirects, and a spool sent to one client as it arrives.

A stored file that cannot be opened (no file descriptor left, an I/O error, the file gone
between lookup and open) is a storage fault, `503`, never aiohttp's bare "404 Not Found":
the blob is not unknown, the registry could not read it just now. A spool whose size is
not known yet (the upstream sent no Content-Length) is sent with chunked framing. Every
sender records the bytes it sent (`sent.py`), for the access log and the bytes-served metric.

Through TLS sendfile cannot apply, and asyncio's stand-in for it (`loop.sendfile` on a TLS
transport: 256 KiB reads in a thread, each waited for, then a drain) sent a warm blob at
a third of nginx's speed with 5.9 s of CPU per GB (bench/RESULTS.md); through TLS blobs go
out through aiohttp's writer, in COPY_CHUNK reads (0.9 s per GB).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import IO, Any, BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from ..common.errors import RangeNotSatisfiable
from ..common.oci import BLOB_CONTENT_TYPE, Digest
from ..common.storage.objects import StorageUnavailable
from .pullthrough.answers import StoredBlob
from .pullthrough.spool import Spool
from .ranges import Unsatisfiable, Window, wanted
from .sent import SentBytes, progress, sendfile, sent_of

# Reads of a file copied through the writer (TLS, chunked framing, a loop without sendfile).
COPY_CHUNK = 1024 * 1024


def _through_tls(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


def blob_headers(digest: Digest) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "Content-Type": BLOB_CONTENT_TYPE,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000, immutable",
    }


class BlobVanished(StorageUnavailable):
    """The stored blob was deleted (a prune, a scrub) between its lookup and its opening:
    the handler looks again, and finds it missing."""


class _OpenFailed(Exception):
    """Not an OSError, so that `web.FileResponse.prepare` lets it through."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class BlobFileResponse(web.FileResponse):
    """`web.FileResponse` (sendfile, Range, If-Modified-Since) whose ETag is the digest:
    content-addressed bytes never change, whatever the file's mtime. It is prepared by
    `stored_blob_response`, inside the handler, so that a failure to open the file reaches
    the error middleware instead of becoming aiohttp's text 404."""

    def __init__(self, path: Path, digest: Digest, headers: dict[str, str], sent: SentBytes):
        super().__init__(path, headers=headers, chunk_size=COPY_CHUNK)
        self._digest_etag = str(digest)
        self._sent = sent  # the tally of the client's request (prepare may get a clone)

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:
            return None  # by the handler already; aiohttp asks again after it returns
        return await super().prepare(request)

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        # aiohttp's send, counted: its sendfile bypasses the writer (`sent.py`), its
        # fallback (no sendfile on this loop) goes through it; through TLS, the fallback.
        if _through_tls(request):
            writer = await web.StreamResponse.prepare(self, request)
            assert writer is not None
            return await self._sendfile_fallback(writer, fobj, offset, count)
        through = self._sent.through_writer
        try:
            return await super()._sendfile(request, fobj, offset, count)
        finally:
            if self._sent.through_writer == through:
                self._sent.past_writer += progress(fobj, offset, count)

    async def _sendfile_fallback(
        self, writer: AbstractStreamWriter, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        try:
            return await super()._sendfile_fallback(writer, fobj, offset, count)
        finally:
            self._sent.through_writer += progress(fobj, offset, count)

    def _make_response(self, request: Any, accept_encoding: str) -> Any:
        try:
            return super()._make_response(request, accept_encoding)
        except OSError as error:
            raise _OpenFailed(error) from error

    @property  # type: ignore[override]
    def etag(self) -> Any:
        return super().etag

    @etag.setter
    def etag(self, value: Any) -> None:
        web.FileResponse.etag.fset(self, self._digest_etag)  # type: ignore[attr-defined]


def etag_matches(request: web.Request, digest: Digest | str) -> bool:
    """Does If-None-Match name this content (by its digest, our ETag)?"""
    if_none_match = request.headers.get("If-None-Match")
    if not if_none_match:
        return False
    candidates = {value.strip().removeprefix("W/").strip('"') for value in if_none_match.split(",")}
    return "*" in candidates or str(digest) in candidates


def not_modified(digest: Digest | str) -> web.Response:
    return web.Response(
        status=304, headers={"ETag": f'"{digest}"', "Docker-Content-Digest": str(digest)}
    )


def requested_range(request: web.Request, digest: Digest, size: int) -> Window | None:
    """The single window `Range` asks for (`ranges.wanted`), None for the whole blob; a
    range that cannot be satisfied is a 416 in the OCI error format."""
    try:
        return wanted(
            request.headers.get("Range"), request.headers.get("If-Range"), f'"{digest}"', size
        )
    except Unsatisfiable:
        raise RangeNotSatisfiable(
            "range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
        ) from None


def _as_decided(request: web.Request, window: Window | None) -> web.BaseRequest:
    """The request as `FileResponse` should read it: the window decided here, or no Range."""
    if "Range" not in request.headers and "If-Range" not in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers.popall("If-Range", None)
    headers.popall("Range", None)
    if window is not None:
        headers["Range"] = f"bytes={window.start}-{window.stop - 1}"
    return request.clone(headers=headers)


async def stored_blob_response(request: web.Request, blob: StoredBlob) -> web.StreamResponse:
    """A blob from storage; what it sent is in the request's `sent_of` tally."""
    headers = blob_headers(blob.digest)
    if etag_matches(request, blob.digest):
        return not_modified(blob.digest)
    window = requested_range(request, blob.digest, blob.size)
    if blob.path is not None:
        file_response = BlobFileResponse(blob.path, blob.digest, headers, sent_of(request))
        try:
            await file_response.prepare(_as_decided(request, window))
        except _OpenFailed as failed:
            if isinstance(failed.error, FileNotFoundError):
                raise BlobVanished(f"the stored blob is gone: {failed.error}") from None
            raise StorageUnavailable(f"cannot open the stored blob: {failed.error}") from None
        except ConnectionError:
            pass  # the client went away during the transfer
        return file_response
    if blob.redirect_url is not None:
        raise web.HTTPTemporaryRedirect(
            blob.redirect_url, headers={"Docker-Content-Digest": str(blob.digest)}
        )
    start, stop = (window.start, window.stop) if window is not None else (0, blob.size)
    response = web.StreamResponse(status=206 if window else 200, headers=headers)
    response.content_length = stop - start
    if window is not None:
        response.headers["Content-Range"] = window.content_range(blob.size)
    await response.prepare(request)
    if request.method == "GET":
        sent = sent_of(request)
        async for chunk in blob.read_range(start, stop):
            await response.write(chunk)
            sent.through_writer += len(chunk)
    await response.write_eof()
    return response


async def send_spool(
    request: web.Request,
    response: web.StreamResponse,
    spool: Spool,
    window: Window | None = None,
) -> bool:
    """Send a spooled blob (or the `window` of it) to one client as it arrives; False when
    the transfer was aborted or could not start (the spool is gone: the response is then
    not prepared). A window that holds the last byte waits for the digest like the rest."""
    try:
        file = await asyncio.to_thread(open, spool.path, "rb")
    except OSError:
        return False  # the cacher committed it and the spool is gone: caller retries
    spool.readers += 1
    try:
        if response.content_length is None:
            # Size unknown until the download ends: chunked framing, written by write()
            # (sendfile would put raw bytes between the chunk headers).
            response.enable_chunked_encoding()
        await response.prepare(request)
        offset, stop = (window.start, window.stop) if window is not None else (0, None)
        while stop is None or offset < stop:
            available = spool.releasable()
            if stop is not None:
                available = min(available, stop)
            if offset < available:
                await _send_range(request, response, file, offset, available - offset)
                offset = available
                continue
            if spool.done:
                break
            await spool.wait_for_progress()
        if not spool.verified:
            _abort(request)
            return False
        await response.write_eof()
        return True
    except ConnectionError:
        return False  # the client went away; the download goes on for the others
    finally:
        spool.readers -= 1
        await asyncio.to_thread(file.close)


async def _send_range(
    request: web.Request, response: web.StreamResponse, file: BinaryIO, offset: int, count: int
) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client disconnected")
    # Neither chunked framing nor TLS can go through sendfile.
    if not response.chunked and not _through_tls(request):
        try:
            # Headers were written by prepare(); sendfile waits for them to drain first.
            await sendfile(request, transport, file, offset, count)
            return
        except NotImplementedError:
            pass
    sent = sent_of(request)
    file.seek(offset)
    while count > 0:
        chunk = await asyncio.to_thread(file.read, min(count, COPY_CHUNK))
        if not chunk:
            raise ConnectionResetError("spool shorter than announced")
        await response.write(chunk)
        sent.through_writer += len(chunk)
        count -= len(chunk)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
