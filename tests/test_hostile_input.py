"""Hostile input: more than 10,000 generated requests against the real app; nothing breaks.

The app (`create_app` plus the embedded cacher, as `simple-registry server` runs it) listens
on a loopback port in a background thread's event loop, with filesystem storage under a
temporary folder and two repositories:

* ``hub`` -- the real CNCF Distribution (`upstream`), holding the small image (tags
  ``latest`` and ``1.0``) and a multi-platform index, so that generated requests also
  succeed, get cached, and are then served from storage (Range, ETag, If-None-Match);
* ``rec`` -- a `RecordingUpstream` behind Basic credentials and a Bearer token realm,
  answering 404, 401, 429, 500 or slowly according to the name, recording every request.
  It is also ``default_repository``, so that every other valid name is forwarded there.

Requests go over raw sockets, so that no client library normalises `..`, `%2e%2e`,
encoded slashes, odd bytes or oversized headers. For every answer:

* the status is never 500, and no 5xx but 503 UNAVAILABLE, which only a request that may
  reach a failing upstream may get: ``rec``, or Distribution asked for a blob's digest under
  `/manifests/` (Distribution itself answers 500 to that);
* every 4xx/5xx with a body is an OCI error, `{"errors": [{"code", "message", ...}]}`, with
  a code from the distribution spec or from `simple_registry.common.errors`, and the status that
  code has there;
* every 2xx/304 answers GET or HEAD with the right headers: `Docker-Content-Digest` for
  manifests and blobs (the digest of the body for a full GET, the known bytes for a range),
  `Content-Length` equal to the body's length, a valid `Content-Range` for a 206;
* no response, log line or metric contains the upstream password, its Basic header or the
  token the realm issued; no traceback reaches a client.

After each test: storage holds only the documented layout (`blobs/`, `repositories/`,
`_staging/`, with valid names, tags and digests, blobs matching their digests) and nothing
exists outside the storage root; the recording upstream and Distribution only ever saw
GET/HEAD of `/v2/<valid name>/...` (and the configured token realm) on their own host,
never a client's headers; the log's upstream fetch lines and the metrics name only
configured upstream hosts.

Each test stands alone (its own app, storage and recording upstream; its counts are its
own) and is derandomized: the same generated requests on every run, so a failure replays.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import string
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from aiohttp import http_exceptions, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simple_registry.cacher.service import embedded_cacher
from simple_registry.common import errors as registry_errors
from simple_registry.common.config import parse_settings
from simple_registry.common.logs import ACCESS_LOG_FORMAT
from simple_registry.common.oci import DIGEST_RE, MANIFEST_MEDIA_TYPES, NAME_RE, TAG_RE
from simple_registry.frontend.app import create_app

from tests.fixtures.distribution import Distribution
from tests.fixtures.images import PushedImage, build_multi_platform, build_small_image
from tests.fixtures.plugin import PushedImageCache
from tests.fixtures.recording_upstream import CONTENT, CONTENT_TAG, RecordingUpstream
from tests.fixtures.threaded_server import ThreadedServer

pytestmark = pytest.mark.timeout(300)

USERNAME = "hostile-user"
PASSWORD = "hostile-pass-SECRET"
BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
# Put in client headers; an upstream must never see it.
CLIENT_MARKER = "client-marker-q7x"
# Path traversal attempts aim at this name; it must appear nowhere on disk.
ESCAPEE = "escapee"
HUB_NS = "hub.example"
REC_NS = "rec.example"

# -- the content generated requests may hit -----------------------------------------------

SMALL = build_small_image()
INDEX = build_multi_platform()
HUB_NAMES = ("hub/fixtures/small", "hub/fixtures/index")
REC_NAMES = ("rec/bearer/app", "rec/basic/app", "rec/bearer/deep/er/name")
KNOWN: dict[str, bytes] = {SMALL.digest: SMALL.raw, INDEX.digest: INDEX.raw}
for _manifest in (SMALL, *INDEX.manifests):
    KNOWN[_manifest.digest] = _manifest.raw
    for _blob in _manifest.blobs:
        KNOWN[_blob.digest] = _blob.read()
KNOWN[CONTENT.digest] = CONTENT.manifest
KNOWN.update(CONTENT.blobs)
MANIFEST_DIGESTS = (SMALL.digest, INDEX.digest, *(m.digest for m in INDEX.manifests))
BLOB_DIGESTS = tuple(d for d in KNOWN if d not in MANIFEST_DIGESTS and d != CONTENT.digest)
REAL_DIGESTS = (*MANIFEST_DIGESTS, *BLOB_DIGESTS, CONTENT.digest)
REAL_TAGS = ("latest", "1.0", CONTENT_TAG)
# Distribution answers 500 (not 404) when a blob's digest is asked for under /manifests/.
UPSTREAM_500_ON_MANIFESTS = frozenset(b.digest for b in (*SMALL.blobs, *INDEX.blobs))

# -- the error codes an answer may carry ----------------------------------------------------

SPEC_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
)


def _registry_error_statuses() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    pending = list(registry_errors.RegistryError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, set()).add(cls.status)
        pending.extend(cls.__subclasses__())
    return found


# The codes of the registry's errors with their statuses; "UNKNOWN" (the 500 fallback of
# the base class) is not one of them.
CODE_STATUS = _registry_error_statuses()
ALLOWED_CODES = SPEC_CODES | CODE_STATUS.keys()

# -- raw HTTP ------------------------------------------------------------------------------

# Methods aiohttp's parser knows; anything else may be refused before the app sees it.
PLAIN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
MAX_LINE = 8190  # create_app's max_line_size / max_field_size
# Headers aiohttp's parser refuses to see twice.
SINGLETON_HEADERS = frozenset(
    {b"content-length", b"content-type", b"host", b"transfer-encoding", b"user-agent", b"etag"}
)


@dataclass(frozen=True)
class Req:
    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    # "length": Content-Length; "chunked": chunked framing; "none": the headers say it all.
    framing: str = "length"
    # The request is deliberately broken at the HTTP level (framing, bytes, sizes).
    broken: bool = False

    def encode(self) -> bytes:
        names = {name.lower() for name, _ in self.headers}
        lines = [self.method.encode("utf-8", "surrogateescape") + b" " + self.target + b" HTTP/1.1"]
        if b"host" not in names:
            lines.append(b"Host: 127.0.0.1")
        lines.append(b"Connection: close")
        lines.extend(name + b": " + value for name, value in self.headers)
        body = self.body
        if self.framing == "length" and (body or self.method in ("PUT", "POST", "PATCH")):
            lines.append(b"Content-Length: %d" % len(body))
        elif self.framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    @property
    def may_be_refused_by_the_http_parser(self) -> bool:
        """What aiohttp's HTTP parser may answer with a plain 400 before the app runs."""
        if self.broken or self.method not in PLAIN_METHODS:
            return True
        if len(self.target) > MAX_LINE - 20 or len(self.headers) > 90:
            return True
        if not self.target.startswith(b"/") or any(b <= 0x20 or b >= 0x7F for b in self.target):
            return True
        seen = Counter(name.lower() for name, _ in self.headers)
        if any(seen[name] > 1 for name in SINGLETON_HEADERS):
            return True
        for name, value in self.headers:
            if max(len(name), len(value)) > MAX_LINE - 20 or not re.fullmatch(rb"[!-~]+", name):
                return True
            if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
                return True
        return False

    def describe(self) -> str:
        headers = b"; ".join(n + b": " + v[:120] for n, v in self.headers)
        return f"{self.method} {self.target[:300]!r} [{headers[:600]!r}] body={len(self.body)}"


@dataclass
class RawResponse:
    status: int
    head: bytes
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    # What came after the end of the answer, before the server closed the connection.
    trailing: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class _Incomplete(Exception):
    pass


def _dechunk(data: bytes) -> tuple[bytes, int]:
    """(body, bytes consumed) of a complete chunked body; `_Incomplete` when more must be
    read."""
    body = bytearray()
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            raise _Incomplete
        size = int(data[position:end].split(b";")[0], 16)
        position = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                raise _Incomplete
            return bytes(body), trailer_end + 4
        if len(data) < position + size + 2:
            raise _Incomplete
        body += data[position : position + size]
        position += size + 2


class _Reader:
    def __init__(self, sock: socket.socket, timeout: float):
        self.sock = sock
        self.timeout = timeout
        self.data = b""
        self.closed = False

    def fill(self) -> bool:
        """Read more; False once the server closed the connection."""
        if self.closed:
            return False
        try:
            chunk = self.sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            raise AssertionError(f"no complete answer within {self.timeout}s (a hang)") from None
        if not chunk:
            self.closed = True
            return False
        self.data += chunk
        return True


def exchange(
    port: int, request: bytes, method: str, *, to_the_end: bool = True, timeout: float = 20.0
) -> RawResponse:
    """Send `request` as is over a new connection and read one complete answer. With
    `to_the_end`, read on until the server closes (every request says `Connection: close`)
    and keep what followed the answer in `trailing` (a HEAD answer's body, say)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # It may answer early and close: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        reader = _Reader(sock, timeout)
        offset = 0
        while True:  # 1xx answers (100 Continue) come before the real one
            while b"\r\n\r\n" not in reader.data[offset:]:
                assert reader.fill(), f"no complete response head: {reader.data[:500]!r}"
            end = reader.data.index(b"\r\n\r\n", offset)
            head = reader.data[offset:end]
            status_line, *header_lines = head.split(b"\r\n")
            match = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
            assert match, f"bad status line: {status_line!r}"
            status = int(match[1])
            offset = end + 4
            if status >= 200:
                break
        headers = []
        for line in header_lines:
            name, sep, value = line.partition(b":")
            assert sep, f"bad response header line {line!r}"
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        response = RawResponse(status, head, headers, b"", b"")
        length = response.header("Content-Length")
        if method == "HEAD" or status in (204, 304):
            end = offset
        elif (response.header("Transfer-Encoding") or "").lower() == "chunked":
            while True:
                try:
                    response.body, consumed = _dechunk(reader.data[offset:])
                    end = offset + consumed
                    break
                except _Incomplete:
                    assert reader.fill(), f"truncated chunked body: {reader.data[-300:]!r}"
        elif length is not None and length.isdigit():
            end = offset + int(length)
            while len(reader.data) < end and reader.fill():
                pass
            response.body = reader.data[offset:end]
        else:
            while reader.fill():
                pass
            end = len(reader.data)
            response.body = reader.data[offset:]
        if to_the_end:
            while reader.fill():
                pass
            response.trailing = reader.data[end:]
        response.raw = reader.data
    return response


# -- the app in a background thread --------------------------------------------------------


def served_app(app: web.Application) -> ThreadedServer:
    """`create_app(settings)` with the embedded cacher, as `simple-registry server` runs it,
    on a loopback port served by an event loop in a background thread, with the access log."""
    return ThreadedServer(
        lambda: app,
        shutdown_timeout=5.0,
        name="hostile-app",
        access_log=logging.getLogger("simple_registry.access"),
        access_log_format=ACCESS_LOG_FORMAT,
    )


class LogRecorder(logging.Handler):
    """Every log record of every thread, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.records: list[tuple[int, str, str, type[BaseException] | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        kind = record.exc_info[0] if record.exc_info else None
        self.records.append((record.levelno, record.name, text, kind))


# -- what is checked -----------------------------------------------------------------------

_HEX = {"sha256": 64, "sha512": 128}
_ALG_HEX = r"(?:sha256/[0-9a-f]{64}|sha512/[0-9a-f]{128})"
# A temp file names its writer's owner id (`storage/owners.py`) before its random part.
_OWNER = r"[a-z0-9][a-z0-9-]{0,79}"
_TEMP = rf"(?:~tmp~(?:{_OWNER}\.)?[0-9a-f]{{32}})?"
BLOB_KEY_RE = re.compile(rf"^blobs/(sha256|sha512)/([0-9a-f]{{2}})/([0-9a-f]+){_TEMP}$")
REPO_KEY_RE = re.compile(
    rf"^repositories/(?P<name>.+?)/(?:(?:_manifests|_pulls)/tags/(?P<tag>[^/]+)|"
    rf"(?:_manifests|_pulls)/revisions/{_ALG_HEX}|_layers/{_ALG_HEX}){_TEMP}$"
)
# Spools (in their owner's folder) and the owners' locks.
STAGED_RE = re.compile(
    rf"^_staging/(?:(?:{_OWNER}/)?(?:sha256-[0-9a-f]{{64}}|sha512-[0-9a-f]{{128}})\.[0-9a-f]{{32}}"
    rf"|{_OWNER}\.lock)$"
)
# The cache lifecycle's own records (storage/keys.py).
LIFECYCLE_RE = re.compile(rf"^_lifecycle/(?:usage|invalidation|lock|released/{_ALG_HEX}){_TEMP}$")


def decoded_path(target: bytes) -> str:
    text = target.decode("utf-8", "replace")
    if not text.startswith("/"):
        text = urlsplit(text).path or "/"
    return unquote(text.split("?", 1)[0].split("#", 1)[0])


def route_of(path: str) -> tuple[str, str]:
    """(route, name) of a decoded path, read the way `actions.parse_action` reads it: the
    name may hold slashes, so each route keyword is looked for from the right."""
    if path in ("/v2", "/v2/", "/v2//"):
        return "base", ""
    if path == "/v2/_catalog":
        return "catalog", ""
    if path in ("/healthz", "/readyz", "/metrics"):
        return path[1:], ""
    if not path.startswith("/v2/"):
        return "other", ""
    tail = path[4:]
    for keyword in ("/manifests/", "/blobs/uploads", "/blobs/", "/tags/list", "/referrers/"):
        index = tail.rfind(keyword)
        if index <= 0:
            continue
        name, rest = tail[:index], tail[index + len(keyword) :]
        if keyword == "/blobs/uploads":
            if rest == "" or rest.startswith("/"):
                return "uploads", name
        elif keyword == "/tags/list":
            if not rest:
                return "tags", name
        elif rest and "/" not in rest:
            return keyword.strip("/"), name
    return "other", tail


def may_reach_a_failing_upstream(req: Req) -> bool:
    """Whether the request may be routed to `rec`, the only upstream that may fail (or to
    Distribution with a request Distribution itself fails)."""
    path = decoded_path(req.target)
    route, name = route_of(path)
    if route == "readyz":
        return True
    if route not in ("manifests", "blobs", "referrers"):
        return False
    if b"/../" in req.target or b"/./" in req.target:
        return True  # dot segments: where the request lands is the server's reading
    if route == "manifests" and path.rsplit("/", 1)[-1] in UPSTREAM_500_ON_MANIFESTS:
        # Distribution itself answers 500 for a blob's digest under /manifests/: the
        # upstream fails, and 503 UNAVAILABLE is the documented answer.
        return True
    text = req.target.decode("utf-8", "replace")
    query = text.split("?", 1)[1] if "?" in text else ""
    namespaces = {
        unquote(value.replace("+", " ")).lower()
        for pair in query.split("&")  # yarl, like the URL standard, splits on & only
        for key, _, value in [pair.partition("=")]
        if unquote(key) == "ns"
    }
    if REC_NS in namespaces:
        return True
    if name.startswith("hub/"):
        return False
    return namespaces != {HUB_NS}


def digest_of(data: bytes, digest: str) -> str:
    algorithm = digest.split(":", 1)[0]
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class Harness:
    def __init__(self, base: Path, dist: Distribution, rec: RecordingUpstream):
        self.base = base
        self.root = base / "storage"
        self.dist = dist
        self.rec = rec
        self.secrets = (PASSWORD, BASIC, BASIC.split(" ", 1)[1], rec.token)
        self.upstream_hosts = {dist.host_port, rec.host_port}
        self.count = 0
        self.outcomes: Counter[tuple[str, int]] = Counter()
        self.parser_refusals = 0
        # Successful answers with the recording upstream's content (behind its credentials).
        self.rec_content_served = 0
        self.log = LogRecorder()
        self._log_checked = 0
        self._rec_checked = 0
        self.settings = parse_settings(
            {
                "server": {"drain_timeout_secs": 2},
                "global": {
                    "access_policy": {"default_allow": True},
                    "default_repository": "rec",
                    # Keep every upstream in play: no circuit breaker opening mid-run.
                    "upstream_failure_threshold": 1_000_000,
                    "upstream_cooldown_secs": 0,
                    "max_concurrent_cache_jobs": 4,
                },
                "blob_store": {"fs": {"root_dir": str(self.root)}},
                "repository": {
                    "hub": {
                        "namespace": HUB_NS,
                        "immutable_tags": True,
                        "immutable_tags_exclusions": ["^latest$"],
                        "upstream": [{"url": dist.url}],
                    },
                    "rec": {
                        "namespace": REC_NS,
                        "upstream": [
                            {
                                "url": rec.url,
                                "username": USERNAME,
                                "password": PASSWORD,
                                "connect_timeout_secs": 2,
                                "read_timeout_secs": 0.15,
                            }
                        ],
                    },
                },
            }
        )
        app = create_app(self.settings)
        app.cleanup_ctx.append(embedded_cacher)
        self.server = served_app(app)
        self.dist_mark = 0

    # -- requests ------------------------------------------------------------------------

    def send(self, req: Req) -> RawResponse:
        self.count += 1
        response = None
        try:
            # A deliberately broken request may declare a body it never sends: then the
            # server lingers before closing, so stop reading at the end of the answer.
            response = exchange(
                self.server.port, req.encode(), req.method, to_the_end=not req.broken
            )
            self.check(req, response)
        except AssertionError as error:
            raw = response.raw[:1500] if response is not None else b"(none)"
            raise AssertionError(f"{error}\nrequest: {req.describe()}\nresponse: {raw!r}") from None
        return response

    def check(self, req: Req, resp: RawResponse) -> None:
        for secret in self.secrets:
            assert secret.encode() not in resp.raw, "a credential leaked into a response"
        assert b"Traceback (most recent call last)" not in resp.raw, "a traceback leaked"
        assert resp.status != 500, "500 Internal Server Error"
        if resp.status >= 500:
            assert resp.status == 503, f"5xx other than 503: {resp.status}"
            assert may_reach_a_failing_upstream(req), "503 although the upstream is healthy"
        if resp.header("Docker-Distribution-API-Version") is None:
            # aiohttp's HTTP parser refused the request before the app (and its
            # on_response_prepare signal) saw it: a plain-text 400.
            # aiohttp offers no hook for the body of these (see the closing note).
            assert resp.status == 400, f"an answer without the API version header: {resp.status}"
            assert req.may_be_refused_by_the_http_parser, "the HTTP parser refused a valid request"
            self.parser_refusals += 1
            return
        assert resp.header("Docker-Distribution-API-Version") == "registry/2.0"
        assert not resp.trailing, f"bytes after the end of the answer: {resp.trailing[:300]!r}"
        lengths = resp.all("Content-Length")
        assert len(lengths) <= 1, f"several Content-Length headers: {lengths}"
        if req.method == "HEAD" or resp.status in (204, 304):
            assert resp.body == b"", "a body in a HEAD/204/304 answer"
        elif lengths:
            assert int(lengths[0]) == len(resp.body), "Content-Length differs from the body"
        path = decoded_path(req.target)
        route, _ = route_of(path)
        self.outcomes[(route, resp.status)] += 1
        if resp.status >= 400:
            if resp.body:
                self.check_oci_error(resp)
            return
        assert req.method in ("GET", "HEAD"), f"{req.method} succeeded: {resp.status}"
        if resp.status == 304:
            assert resp.header("ETag"), "a 304 without an ETag"
            return
        assert 200 <= resp.status < 300, f"unexpected status {resp.status}"
        if req.method == "GET":
            assert lengths, "a successful GET without Content-Length"
        self.check_success(req, resp, route)

    def check_oci_error(self, resp: RawResponse) -> None:
        content_type = resp.header("Content-Type") or ""
        assert content_type.startswith("application/json"), f"error as {content_type!r}"
        body = json.loads(resp.body)
        errors = body["errors"]
        assert isinstance(errors, list) and errors, "no errors in an error body"
        for error in errors:
            assert isinstance(error, dict) and isinstance(error.get("message"), str)
            code = error.get("code")
            assert code in ALLOWED_CODES, f"error code {code!r} is not a known one"
            if code in CODE_STATUS:
                assert resp.status in CODE_STATUS[code], f"{code} with status {resp.status}"

    def check_success(self, req: Req, resp: RawResponse, route: str) -> None:
        get = req.method == "GET"
        if route in ("manifests", "blobs"):
            digest = resp.header("Docker-Content-Digest")
            assert digest and DIGEST_RE.match(digest), f"Docker-Content-Digest {digest!r}"
            assert digest.split(":", 1)[0] in _HEX
            length = resp.header("Content-Length")
            assert length is not None and length.isdigit(), "no Content-Length"
            if route == "manifests":
                media = (resp.header("Content-Type") or "").split(";")[0]
                assert media in MANIFEST_MEDIA_TYPES, f"manifest Content-Type {media!r}"
                assert resp.status == 200
            if digest == CONTENT.digest or digest in CONTENT.blobs:
                self.rec_content_served += 1
            if resp.status == 206:
                self.check_partial(req, resp, digest)
            elif get:
                assert resp.status == 200
                assert digest_of(resp.body, digest) == digest, "the body is not its digest"
                if digest in KNOWN:
                    assert resp.body == KNOWN[digest]
            elif digest in KNOWN:
                assert int(length) == len(KNOWN[digest]), "HEAD Content-Length is wrong"
            return
        assert resp.status == 200, f"{route} answered {resp.status}"
        if route == "metrics" or not get:
            return
        body = json.loads(resp.body)
        if route == "base":
            assert body == {}
        elif route == "catalog":
            assert isinstance(body["repositories"], list)
            assert all(isinstance(n, str) and NAME_RE.match(n) for n in body["repositories"])
        elif route == "tags":
            assert isinstance(body["name"], str) and isinstance(body["tags"], list)
            assert all(isinstance(t, str) and TAG_RE.match(t) for t in body["tags"])
        elif route == "referrers":
            assert body["manifests"] == [] and body["schemaVersion"] == 2
        elif route in ("healthz", "readyz"):
            assert "status" in body
        else:
            raise AssertionError(f"success on route {route!r}")

    def check_partial(self, req: Req, resp: RawResponse, digest: str) -> None:
        assert any(name.lower() == b"range" for name, _ in req.headers), "206 without Range"
        content_range = resp.header("Content-Range") or ""
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", content_range)
        assert match, f"206 with Content-Range {content_range!r}"
        start, end, size = (int(g) for g in match.groups())
        assert start <= end < size, f"impossible Content-Range {content_range!r}"
        if req.method == "GET":
            assert len(resp.body) == end - start + 1
            if digest in KNOWN:
                assert size == len(KNOWN[digest])
                assert resp.body == KNOWN[digest][start : end + 1], "wrong bytes in a range"

    # -- after a test --------------------------------------------------------------------

    def check_everything_else(self) -> None:
        self.check_storage()
        self.check_no_escape()
        self.check_upstream_requests()
        self.check_distribution_requests()
        self.check_logs()
        self.check_metrics()

    def check_storage(self) -> None:
        for folder, dirs, files in os.walk(self.base):
            for entry in (*dirs, *files):
                path = Path(folder, entry)
                assert path == self.root or self.root in path.parents, f"outside root: {path}"
            for entry in files:
                key = Path(folder, entry).relative_to(self.root).as_posix()
                self.check_key(key)
        if self.root.exists():
            top = {entry.name for entry in self.root.iterdir()}
            top_level = {"blobs", "repositories", "_staging", "_lifecycle"}
            assert top <= top_level, f"storage top level: {top}"

    def check_key(self, key: str) -> None:
        if key.startswith("blobs/"):
            match = BLOB_KEY_RE.match(key)
            assert match, f"unexpected blob key {key!r}"
            algorithm, prefix, hex_ = match.groups()
            assert len(hex_) == _HEX[algorithm] and hex_.startswith(prefix), key
            if "~tmp~" not in key:
                data = (self.root / key).read_bytes()
                assert hashlib.new(algorithm, data).hexdigest() == hex_, f"unverified {key}"
        elif key.startswith("repositories/"):
            match = REPO_KEY_RE.match(key)
            assert match, f"unexpected repository key {key!r}"
            name = match["name"]
            assert NAME_RE.match(name) and len(name) <= 255, f"stored name {name!r}"
            assert name.split("/", 1)[0] in ("hub", "rec") and "/" in name, name
            tag = match["tag"]
            assert tag is None or TAG_RE.match(tag.split("~tmp~")[0]), f"stored tag {tag!r}"
        else:
            assert STAGED_RE.match(key) or LIFECYCLE_RE.match(key), f"unexpected key {key!r}"

    def check_no_escape(self) -> None:
        for folder in (self.base, *self.base.parents):
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries]
            assert not [n for n in names if ESCAPEE in n], f"a traversal reached {folder}"
        # With filesystem storage, spools live in its _staging/, never in the temp folder.
        spool_dir = Path(tempfile.gettempdir(), f"simple-registry-spool-{os.getpid()}")
        assert not spool_dir.exists(), f"files outside storage: {spool_dir}"

    def check_upstream_requests(self) -> None:
        requests = self.rec.requests
        for request in requests[self._rec_checked :]:
            what = f"the recording upstream got {request.method} {request.path_qs}"
            assert request.host == self.rec.host_port, f"{what} for Host {request.host!r}"
            assert request.method in ("GET", "HEAD"), what
            for name, value in request.headers:
                assert CLIENT_MARKER not in value, f"{what} with the client's {name}"
            authorization = request.header("Authorization")
            if request.path == "/token":
                assert authorization == BASIC, f"{what} without the configured credentials"
                continue
            assert authorization in (None, BASIC, f"Bearer {self.rec.token}"), what
            check_upstream_path(request.path_qs, what)
        self._rec_checked = len(requests)

    def check_distribution_requests(self) -> None:
        for entry in self.dist.requests_since(self.dist_mark):
            what = f"Distribution got {entry}"
            assert entry.method in ("GET", "HEAD"), what
            check_upstream_path(entry.target, what)

    def check_logs(self) -> None:
        records = self.log.records
        for level, logger, text, kind in records[self._log_checked :]:
            for secret in self.secrets:
                assert secret not in text, f"a credential in the log: {logger}"
            assert "unhandled error" not in text, f"an unhandled error was logged:\n{text}"
            if kind is not None and level >= logging.ERROR:
                # The parser refusing a request logs its exception; anything else is a bug.
                assert logger == "aiohttp.server" and issubclass(
                    kind, http_exceptions.HttpProcessingError
                ), f"a traceback in the log:\n{text}"
            # (The access log repeats the client's request line: nothing to check there.)
            if logger.startswith("simple_registry") and logger != "simple_registry.access":
                for host in re.findall(r"upstream=([\w.\-]+(?::\d+)?)", text):
                    assert host in self.upstream_hosts, f"an unconfigured upstream: {text}"
        self._log_checked = len(records)

    def check_metrics(self) -> None:
        response = self.send(Req("GET", b"/metrics"))
        text = response.body.decode()
        for secret in self.secrets:
            assert secret not in text, "a credential in the metrics"
        for marker in (CLIENT_MARKER, ESCAPEE, "fixtures/small", SMALL.digest[7:]):
            assert marker not in text, f"an unbounded label value in the metrics: {marker}"
        for host in re.findall(r'upstream="([^"]*)"', text):
            assert host in self.upstream_hosts, f"an unconfigured upstream in metrics: {host}"
        methods = set(re.findall(r'method="([^"]*)"', text))
        assert len(methods) <= 40 and all(re.fullmatch(r"[A-Z-]{1,20}", m) for m in methods)


# The queries a registry may forward (paging a tag list, filtering referrers), by route.
UPSTREAM_QUERY_KEYS = {"tags": {"n", "last"}, "referrers": {"artifactType"}}


def check_upstream_path(path_qs: str, what: str) -> None:
    """An upstream request is `/v2/`, `/v2/<valid name>/tags/list` or
    `/v2/<valid name>/(manifests|blobs|referrers)/<reference>`, with no query but a
    route's own (validated) parameters."""
    path, _, query = path_qs.partition("?")
    if path in ("/v2", "/v2/"):
        assert query == "", f"{what}: a query string"
        return
    match = re.fullmatch(r"/v2/(.+)/(?:(manifests|blobs|referrers)/([^/]+)|(tags)/list)", path)
    assert match, f"{what}: not a registry path"
    name, kind, reference, tags = match.groups()
    kind = kind or tags
    assert NAME_RE.match(name) and len(name) <= 255, f"{what}: invalid name"
    keys = {pair.partition("=")[0] for pair in query.split("&") if pair}
    assert keys <= UPSTREAM_QUERY_KEYS.get(kind, set()), f"{what}: a query string"
    if kind == "tags":
        return
    if kind in ("blobs", "referrers") or ":" in reference:
        assert DIGEST_RE.match(reference) and reference.split(":")[0] in _HEX, what
    else:
        assert TAG_RE.match(reference), f"{what}: invalid tag"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def harness(
    tmp_path: Path,
    upstream: Distribution,
    small_image: PushedImage,
    multi_platform_image: PushedImage,
    pushed_images: PushedImageCache,
) -> Iterator[Harness]:
    assert small_image.digest == SMALL.digest and small_image.name == "fixtures/small"
    assert multi_platform_image.digest == INDEX.digest
    assert multi_platform_image.name == "fixtures/index"
    assert pushed_images.get(upstream, "small", tag="1.0").digest == SMALL.digest
    rec = RecordingUpstream(USERNAME, PASSWORD, slow_secs=0.4).start()
    harness = Harness(tmp_path / "hostile", upstream, rec)
    loggers = {name: logging.getLogger(name) for name in ("simple_registry", "aiohttp")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(harness.log)
    harness.dist_mark = upstream.mark()
    harness.server.start()
    try:
        yield harness
    finally:
        try:
            harness.server.stop()
        finally:
            rec.stop()
            root.removeHandler(harness.log)
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


def run_fuzz(harness: Harness, strategy: st.SearchStrategy[Req], examples: int) -> None:
    """Send `examples` generated requests, checking each answer, then everything else.

    Derandomized: the same requests on every run (from the strategy alone), so a failure
    replays as it happened without an example database; Hypothesis prints the request."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one_request(req: Req) -> None:
        harness.send(req)

    one_request()
    harness.check_everything_else()


# -- strategies: names ---------------------------------------------------------------------

LOWER_ALNUM = string.ascii_lowercase + string.digits
TAG_FIRST = string.ascii_letters + string.digits + "_"
HEX = "0123456789abcdef"
_alnum = st.text(LOWER_ALNUM, min_size=1, max_size=6)
valid_component = st.builds(
    lambda a, sep, b: a if b is None else f"{a}{sep}{b}",
    _alnum,
    st.sampled_from([".", "_", "__", "-", "---"]),
    st.none() | _alnum,
)
HOSTILE_SEGMENTS = (
    "",
    ".",
    "..",
    "...",
    "%2e",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "..%2f..",
    f"..%2F..%2F{ESCAPEE}",
    f"..%5c..%5c{ESCAPEE}",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%00",
    "%0a",
    "%0d%0a",
    "%09",
    "%20",
    " ",
    "Upper",
    "UPPER",
    "-lead",
    "trail-",
    "_lead",
    "a..b",
    "a___b",
    "a.-b",
    "~",
    "a~tmp~b",
    "_staging",
    "_manifests",
    "_layers",
    "blobs",
    "repositories",
    ESCAPEE,
    "ü",
    "%C3%BC",
    "\u202e",
    "名前",
    "%ff",
    "%",
    "%zz",
    ";",
    "a;b=c",
    "@",
    "*",
    "$HOME",
    "`id`",
    "manifests",
    "tags",
    "list",
    "uploads",
    "referrers",
    "_catalog",
)
REPO_PREFIXES = (
    "hub",
    "hub",
    "hub/fixtures",
    "rec",
    "rec/bearer",
    "rec/basic",
    "rec/missing",
    "rec/fail",
    "rec/denied",
    "nowhere",
    "HUB",
    "hub.",
    "",
    "..",
    "%2e%2e",
    "_staging",
    "v2",
    "library",
)
_choice12 = st.integers(0, 11)
segment = st.one_of(
    valid_component,
    valid_component,
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(max_size=6),
)
# Keep literal %-escapes and the characters a path may hold as they are; the rest
# (unicode, spaces, '?', '#') is percent-encoded, as a client would send it.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def pct(text: str) -> str:
    return quote(text, safe=PATH_SAFE)


_real_names = st.sampled_from(HUB_NAMES + REC_NAMES)
_prefixes = st.sampled_from(REPO_PREFIXES)
_segment_lists = st.lists(segment, max_size=4)
_long_units = st.sampled_from(["a", "ab/", "a-", "%2e%2e/", "x/"])
_repeats = st.integers(60, 1200)


@st.composite
def _names(draw: st.DrawFn) -> str:
    choice = draw(_choice12)
    if choice < 3:
        return draw(_real_names)
    name = "/".join((draw(_prefixes), *draw(_segment_lists)))
    if choice == 11:  # very long: around NAME_MAX_LENGTH, or far beyond it
        name = name + "/" + draw(_long_units) * draw(_repeats)
    return name


names = _names()


# -- strategies: references ----------------------------------------------------------------

valid_tag = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(TAG_FIRST),
    st.text(TAG_FIRST + ".-", max_size=20),
)
HOSTILE_TAGS = (
    "-x",
    ".x",
    "..",
    "%2e%2e",
    "t" * 128,
    "t" * 129,
    "a%2fb",
    "%00",
    "lat%0aest",
    "%20",
    "%C3%BC",
    "~",
    "x~tmp~y",
    "*",
    "$(id)",
    "%",
    "%zz",
    "latest%3F",
    "latest%23",
    "",
    "%3A",
    "sha256",
    "sha256:",
    "latest/",
    "LATEST",
    f"..%2f..%2f{ESCAPEE}",
)


def mutate(digest: str, how: int) -> str:
    algorithm, hex_ = digest.split(":")
    return [
        f"{algorithm}:{hex_[:-1]}",
        f"{algorithm}:{hex_}0",
        f"{algorithm}:{hex_.upper()}",
        f"{algorithm.upper()}:{hex_}",
        f"{algorithm}:{hex_[:-1]}g",
        f"{algorithm}%3A{hex_}",
        f"{algorithm}:{hex_[1:]}{hex_[0]}",
        f"sha512:{hex_}{hex_}",
        f"sha384:{hex_}",
        f"{algorithm}:{hex_}/../{ESCAPEE}",
    ][how]


_algorithms = st.sampled_from(
    [
        "sha256",
        "sha256",
        "sha512",
        "md5",
        "sha1",
        "SHA256",
        "sha256+b64",
        "sha256.x",
        "blake3",
        "",
        "sha-256",
        "sha256%20",
        "sha256%00",
    ]
)
_alphabets = st.sampled_from([HEX, HEX, HEX.upper(), HEX + "g", "0", "a=_-", "/.", "z"])
_lengths = st.sampled_from([0, 1, 32, 63, 64, 64, 64, 65, 127, 128, 128, 129, 300])
_separators = st.sampled_from([":", ":", ":", "%3A", "%3a", "::", "", "%253A"])
_encodings = {
    (alphabet, length): st.text(alphabet, min_size=length, max_size=length)
    for alphabet in (HEX, HEX.upper(), HEX + "g", "0", "a=_-", "/.", "z")
    for length in (0, 1, 32, 63, 64, 65, 127, 128, 129, 300)
}


@st.composite
def _generated_digests(draw: st.DrawFn) -> str:
    algorithm = draw(_algorithms)
    encoded = draw(_encodings[(draw(_alphabets), draw(_lengths))])
    return f"{algorithm}{draw(_separators)}{encoded}"


digests = st.one_of(
    st.sampled_from(REAL_DIGESTS),
    st.builds(mutate, st.sampled_from(REAL_DIGESTS), st.integers(0, 9)),
    _generated_digests(),
)
references = st.one_of(
    st.sampled_from(REAL_TAGS),
    valid_tag,
    st.sampled_from(HOSTILE_TAGS),
    st.text(max_size=12).map(pct),
    digests,
)

# -- strategies: headers -------------------------------------------------------------------

MEDIA_TYPES = (*MANIFEST_MEDIA_TYPES, "application/json", "*/*", "text/html", "application/*")
# Header values: any printable text. Control characters (which the parser refuses) are
# left to `binary_header` and the broken framing of the raw-request test.
_printable = st.characters(exclude_categories=("Cc", "Cs"))


def header_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_printable, max_size=max_size)


def header(name: str, value: str) -> tuple[bytes, bytes]:
    # A generated value never carries CR/LF: that would break our own request's framing.
    clean = value.replace("\r", "").replace("\n", "")
    return name.encode(), clean.encode("utf-8", "surrogateescape")


accept_values = st.one_of(
    st.sampled_from(
        [
            "*/*",
            "",
            ",",
            ";;;",
            "application/vnd.oci.image.manifest.v1+json;q=0.5, */*;q=0.1",
            'application/json; charset="\\"utf-8"',
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "text/html",
            "application/ü",
            "application/json\udcff",
            "\udcff\udcfe",
            "\x7f",
            "a" * 3000,
        ]
    ),
    st.lists(st.sampled_from(MEDIA_TYPES) | header_text(20), min_size=1, max_size=30).map(
        ", ".join
    ),
    header_text(60),
)
accept_header = accept_values.map(lambda v: header("Accept", v))


def range_value(parts: list[tuple[str, str]]) -> str:
    return "bytes=" + ",".join(f"{a}-{b}" for a, b in parts)


_position = st.one_of(
    st.integers(0, 2000).map(str),
    st.just(""),
    st.sampled_from(["-1", "99999999999999999999999999", "18446744073709551616", "0x10", "1e3"]),
)
range_values = st.one_of(
    st.sampled_from(
        [
            "bytes=0-0",
            "bytes=0-",
            "bytes=-1",
            "bytes=-0",
            "bytes=0-10",
            "bytes=10-5",
            "bytes=5-",
            "bytes=-5",
            "bytes=0-1,3-4",
            "bytes=0-1, 3-4",
            "bytes= 0-1",
            "bytes=0 -1",
            "bytes=--1",
            "bytes=1--2",
            "bytes=-",
            "bytes=",
            "bytes",
            "items=0-1",
            "BYTES=0-1",
            "bytes=\u0663-\u0665",  # Arabic-Indic digits: \\d matches them
            "bytes=\u00b2-",  # a superscript two: isdigit(), but not int()
            "bytes=99999999999999999999999999-",
            "bytes=0-99999999999999999999999999",
            "bytes=-99999999999999999999999999",
            "bytes=9223372036854775807-",
            "bytes=" + "9" * 5000 + "-",
            "bytes=0-" + "9" * 5000,
            "bytes=-9223372036854775808",
            "bytes=0-0,-1",
            ",",
            "bytes=a-b",
            "\xff",
            "bytes=\udcff-1",
        ]
    ),
    st.lists(st.tuples(_position, _position), min_size=1, max_size=3).map(range_value),
    st.integers(-5, 10**30).map(lambda n: f"bytes=-{n}"),
    header_text(20),
)
range_header = range_values.map(lambda v: header("Range", v))


def etag_forms(digest: str) -> list[str]:
    return [f'"{digest}"', digest, f'W/"{digest}"', f' "{digest}" ', f'"x", "{digest}"']


if_none_match_values = st.one_of(
    st.sampled_from(["*", "", '""', "W/*", ",,,", '"""', '"*"', "W/", "null"]),
    st.builds(
        lambda digest, form: etag_forms(digest)[form],
        st.sampled_from(REAL_DIGESTS),
        st.integers(0, 4),
    ),
    header_text(40),
)
if_none_match_header = if_none_match_values.map(lambda v: header("If-None-Match", v))
DATES = (
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "garbage",
    "0",
    "",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
)
conditional_header = st.one_of(
    st.tuples(
        st.sampled_from(["If-Modified-Since", "If-Unmodified-Since", "If-Range"]),
        st.sampled_from(DATES) | header_text(30),
    ),
    st.tuples(
        st.sampled_from(["If-Match", "If-Range"]),
        if_none_match_values,
    ),
).map(lambda pair: header(*pair))
HOSTILE_HOSTS = (
    "evil.example",
    "127.0.0.1:1",
    "",
    "localhost:0",
    "[::1]:9",
    "a" * 300,
    "rec.example",
    "hub.example",
    "169.254.169.254",
)
client_header = st.one_of(
    st.sampled_from(HOSTILE_HOSTS).map(lambda v: header("Host", v)),
    st.sampled_from(
        [
            f"Bearer {CLIENT_MARKER}",
            f"Basic {base64.b64encode(CLIENT_MARKER.encode() + b':x').decode()}",
            CLIENT_MARKER,
        ]
    ).map(lambda v: header("Authorization", v)),
    st.sampled_from(
        ["Cookie", "X-Forwarded-Host", "X-Forwarded-For", "X-Registry-Auth", "Proxy-Authorization"]
    ).map(lambda name: header(name, f"{CLIENT_MARKER}=1")),
    st.sampled_from(["Forwarded", "X-Original-URL", "X-Rewrite-URL"]).map(
        lambda name: header(name, f"/v2/{ESCAPEE}/manifests/latest;{CLIENT_MARKER}")
    ),
    st.sampled_from(["100-continue", "100-Continue", "nonsense"]).map(
        lambda v: header("Expect", v)
    ),
    header_text(30).map(lambda v: header("User-Agent", v)),
    st.sampled_from(["gzip", "br, deflate", "identity;q=0, *;q=0", "\xff"]).map(
        lambda v: header("Accept-Encoding", v)
    ),
)
# Raw bytes: invalid UTF-8 and control characters (the parser may refuse those).
binary_header = st.binary(max_size=24).map(
    lambda v: (b"X-Binary", v.replace(b"\r", b"").replace(b"\n", b""))
)
any_header = st.one_of(
    accept_header,
    range_header,
    if_none_match_header,
    conditional_header,
    client_header,
    binary_header,
)

# -- strategies: requests ------------------------------------------------------------------

_named_routes = st.sampled_from(
    [
        "manifests",
        "manifests",
        "manifests",
        "blobs",
        "blobs",
        "blobs",
        "tags",
        "referrers",
        "uploads",
        "upload",
        "catalog",
        "base",
        "nested",
    ]
)
_base_paths = st.sampled_from(["/v2/", "/v2", "/v2//", "/v2/%2F"])
_keywords = st.sampled_from(["manifests", "blobs", "tags/list", "referrers"])
_upload_ids = st.text(max_size=20)
_named_methods = st.sampled_from(["GET", "GET", "GET", "HEAD", "HEAD", "DELETE", "PUT"])
_named_headers = st.lists(st.one_of(accept_header, client_header), max_size=2)


@st.composite
def _named_requests(draw: st.DrawFn) -> Req:
    """Every route of the API with generated names and references."""
    name = pct(draw(names))
    route = draw(_named_routes)
    if route == "manifests":
        path = f"/v2/{name}/manifests/{pct(draw(references))}"
    elif route == "blobs":
        path = f"/v2/{name}/blobs/{pct(draw(digests))}"
    elif route == "tags":
        path = f"/v2/{name}/tags/list"
    elif route == "referrers":
        path = f"/v2/{name}/referrers/{pct(draw(digests))}"
    elif route == "uploads":
        path = f"/v2/{name}/blobs/uploads/"
    elif route == "upload":
        path = f"/v2/{name}/blobs/uploads/{pct(draw(_upload_ids))}"
    elif route == "catalog":
        path = "/v2/_catalog"
    elif route == "base":
        path = draw(_base_paths)
    else:  # a route keyword inside the name
        path = f"/v2/{name}/{draw(_keywords)}/{name}/manifests/{pct(draw(references))}"
    return Req(draw(_named_methods), path.encode(), tuple(draw(_named_headers)))


named_requests = _named_requests()

_content_names = st.sampled_from(HUB_NAMES + HUB_NAMES + REC_NAMES + ("hub/fixtures/other",))
_manifest_references = st.sampled_from(REAL_TAGS + MANIFEST_DIGESTS + (CONTENT.digest,))
_blob_references = st.sampled_from(BLOB_DIGESTS + BLOB_DIGESTS + REAL_DIGESTS)
_read_methods = st.sampled_from(["GET", "GET", "GET", "HEAD"])
_one_in_four = st.integers(0, 3)
_content_headers = st.lists(
    st.one_of(range_header, range_header, if_none_match_header, conditional_header, accept_header),
    max_size=4,
)


# The manifest a tag of a name points to (what a matching If-None-Match names).
TAGGED = {
    ("hub/fixtures/small", "latest"): SMALL.digest,
    ("hub/fixtures/small", "1.0"): SMALL.digest,
    ("hub/fixtures/index", "latest"): INDEX.digest,
    **{(name, CONTENT_TAG): CONTENT.digest for name in REC_NAMES},
}
_etag_forms = st.integers(0, 4)


@st.composite
def _content_requests(draw: st.DrawFn) -> Req:
    """Real names and references, with Range, conditional and Accept headers."""
    name = draw(_content_names)
    if draw(st.booleans()):
        reference = draw(_manifest_references)
        path = f"/v2/{name}/manifests/{reference}"
    else:
        reference = draw(_blob_references)
        path = f"/v2/{name}/blobs/{reference}"
    headers = draw(_content_headers)
    if draw(_one_in_four) == 0:  # an If-None-Match naming exactly what is asked for
        digest = TAGGED.get((name, reference), reference)
        headers.append(header("If-None-Match", etag_forms(digest)[draw(_etag_forms)]))
    return Req(draw(_read_methods), path.encode(), tuple(headers))


content_requests = _content_requests()

QUERY_TARGETS = (
    "/v2/_catalog",
    "/v2/_catalog",
    "/v2/hub/fixtures/small/tags/list",
    "/v2/hub/fixtures/small/tags/list",
    "/v2/rec/bearer/app/tags/list",
    "/v2/hub/fixtures/small/manifests/latest",
    "/v2/hub/fixtures/small/manifests/1.0",
    "/v2/fixtures/small/manifests/latest",
    "/v2/x/y/manifests/latest",
    f"/v2/hub/fixtures/small/blobs/{SMALL.config.digest}",
    f"/v2/hub/fixtures/small/referrers/{SMALL.digest}",
    "/v2/",
    "/metrics",
    "/healthz",
    "/readyz",
)
QUERY_VALUES = (
    "",
    "0",
    "1",
    "2",
    "-1",
    "10000",
    "10001",
    "99999999999999999999999",
    "1e3",
    "0x10",
    " 5",
    "5 ",
    "+5",
    "%00",
    "\u0663",  # an Arabic-Indic three: int() reads it
    "abc",
    "latest",
    "1.0",
    "zzz",
    "\x00",
    HUB_NS,
    REC_NS,
    "HUB.EXAMPLE",
    "docker.io",
    "a" * 2000,
    f"../../{ESCAPEE}",
)


N_VALUES = (
    "",
    "0",
    "1",
    "-1",
    "10000",
    "10001",
    "99999999999999999999999",
    "1e3",
    "0x10",
    " 5",
    "+5",
    "\u0663",  # an Arabic-Indic three: int() reads it
    "\u00b2",  # a superscript two: isdigit(), but not int()
    "1\u2460",  # a circled one
    "9" * 5000,  # more digits than int() converts
    "0" * 4400 + "1",
)
_any_value = (
    st.sampled_from(QUERY_VALUES) | st.integers(-10, 20_000).map(str) | st.text(max_size=30)
)
_query_pairs = st.lists(
    st.one_of(
        st.tuples(st.just("n"), st.sampled_from(N_VALUES) | st.integers(-5, 20_000).map(str)),
        st.tuples(st.sampled_from(["last", "ns"]), _any_value),
        st.tuples(st.sampled_from(["N", "n[]", "", "x", "last", "ns"]), _any_value),
    ),
    max_size=4,
)
_query_encodings = st.sampled_from(["quote", "quote", "raw-escapes"])
_query_separators = st.sampled_from(["&", "&", "&&", ";"])
_one_in_ten = st.integers(0, 9)
_odd_queries = st.sampled_from(["&&==", "=", "n", "n=", "%", "%zz", "n=%C2%B3%", "?"])
_query_targets = st.sampled_from(QUERY_TARGETS)
_query_methods = st.sampled_from(["GET", "GET", "HEAD"])


@st.composite
def _query_requests(draw: st.DrawFn) -> Req:
    """`n`, `last` and `ns` (and others) with garbage, on every route that reads them."""
    quoted = draw(_query_encodings) == "quote"
    parts = [
        f"{quote(key, safe='')}={quote(value, safe='')}" if quoted else f"{pct(key)}={pct(value)}"
        for key, value in draw(_query_pairs)
    ]
    query = draw(_query_separators).join(parts)
    if draw(_one_in_ten) == 0:
        query = draw(_odd_queries)
    return Req(draw(_query_methods), f"{draw(_query_targets)}?{query}".encode())


query_requests = _query_requests()

COMMON_METHODS = ("GET", "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")
EXOTIC_METHODS = (
    "TRACE",
    "CONNECT",
    "PROPFIND",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "SEARCH",
    "PURGE",
    "REPORT",
    "LINK",
    "QUERY",
    "M-SEARCH",
    "NOTIFY",
    "ACL",
    "MKCALENDAR",
)
BAD_METHODS = ("get", "FOO", "GETT", "G T", "", "GET\x00", "\udcff", "X" * 100, "POST/", "HEAD;")
SMALL_BLOB = SMALL.layers[0].blob.digest
RAW_TARGETS = (
    f"/v2/hub/../../../{ESCAPEE}/manifests/latest".encode(),
    f"/v2/hub/fixtures/small/../../../{ESCAPEE}/blobs/{SMALL_BLOB}".encode(),
    b"/v2/./hub/fixtures/small/manifests/latest",
    b"/v2/hub/fixtures/small/./manifests/latest",
    f"/v2/hub/fixtures/small/blobs/../blobs/{SMALL_BLOB}".encode(),
    b"//v2//hub//fixtures//small//manifests//latest",
    b"/v2/hub/fixtures/small/manifests/latest#frag",
    b"/v2/hub/fixtures/small/manifests/latest?",
    b"/v2/hub/fixtures/small/manifests/latest??n=1",
    b"http://evil.example/v2/hub/fixtures/small/manifests/latest",
    b"http://127.0.0.1:1/v2/rec/bearer/app/manifests/v1",
    b"https://169.254.169.254/latest/meta-data/",
    b"//evil.example/v2/",
    b"*",
    b"/v2/hub/fixtures/small/manifests/lat est",
    b"/v2/hub/\xc3\xbc/manifests/latest",
    b"/v2/\xff/../manifests/latest",
    b"/v2/hub/x%00/manifests/latest",
    b"/v2/hub/x\x00/manifests/latest",
    b"/v2/hub/x\t/manifests/latest",
    b"\\v2\\hub\\x\\manifests\\latest",
    b"v2/hub/x/manifests/latest",
    b"/v2/hub/fixtures/small/manifests/latest/",
    b"/v2/hub/x/blobs/uploads/../../manifests/latest",
    f"/%2e%2e/%2e%2e/{ESCAPEE}".encode(),
    f"/v2/%2e%2e/%2e%2e/{ESCAPEE}/tags/list".encode(),
    f"/v2/..;/..;/{ESCAPEE}/manifests/latest".encode(),
    b"/V2/",
    b"/v2;/",
    b"/v2/_catalog/../hub/fixtures/small/tags/list",
    b"/healthz/../v2/",
    b"/metrics?x=../../",
    b"/v2/hub/fixtures/small/manifests/latest%",
    b"/v2/%",
    b"/" + b"a" * 9000,
    b"/v2/" + b"a/" * 4000 + b"manifests/latest",
)
RAW_SEGMENTS = (b"..", b".", b"", b"%2e%2e", b"\xc3\xa9", b"\xff", b"~", b"a", b"hub", b"rec")
BODIES = (
    b"",
    b"{}",
    SMALL.raw,
    b"\x00" * 70_000,
    b'{"schemaVersion": 2, "mediaType": "' + b"x" * 1000 + b'"}',
)
BROKEN_FRAMING = (
    (b"Content-Length", b"-1"),
    (b"Content-Length", b"abc"),
    (b"Content-Length", b"1, 2"),
    (b"Transfer-Encoding", b"gzip, chunked"),
    (b"Transfer-Encoding", b"chunked, identity"),
    (b"X-Folded", b"a\r\n b"),
    (b"X-Bare-LF", b"a\nX-Other: b"),
    (b"Bad Name", b"x"),
    (b"X-Nul", b"a\x00b"),
    (b"", b"empty-name"),
    (b":", b"colon"),
)
_common_methods = st.sampled_from(COMMON_METHODS)
_raw_methods = st.one_of(
    _common_methods,
    _common_methods,
    st.sampled_from(EXOTIC_METHODS),
    st.sampled_from(BAD_METHODS),
)
_target_kinds = st.integers(0, 4)
_raw_targets = st.sampled_from(RAW_TARGETS)
_raw_segment_lists = st.lists(st.sampled_from(RAW_SEGMENTS), max_size=6)
_raw_suffixes = st.sampled_from(
    [b"manifests/latest", b"blobs/" + SMALL_BLOB.encode(), b"tags/list", b""]
)
_raw_headers = st.lists(any_header, max_size=3)
_big_sizes = st.sampled_from([0, 0, 0, 0, 0, 100, 4000, 8100, 8200, 20_000])
_big_names = st.sampled_from(["X-Big", "Cookie", "Accept"])
_header_counts = st.sampled_from([0, 0, 0, 0, 20, 95, 150])
_one_in_eight = st.integers(0, 7)
_broken_framing = st.sampled_from(BROKEN_FRAMING)
_bodies = st.sampled_from(BODIES)
_framings = st.sampled_from(["length", "length", "chunked"])


@st.composite
def _raw_requests(draw: st.DrawFn) -> Req:
    """Methods, request lines, header sizes and counts, bodies and framing."""
    method = draw(_raw_methods)
    choice = draw(_target_kinds)
    if choice == 0:
        target = draw(_raw_targets)
    elif choice == 1:
        target = b"/v2/" + b"/".join([*draw(_raw_segment_lists), draw(_raw_suffixes)])
    else:
        target = draw(named_requests).target
    headers = draw(_raw_headers)
    size = draw(_big_sizes)
    if size:
        headers.append(header(draw(_big_names), "a" * size))
    headers.extend(header(f"X-Many-{i}", "v") for i in range(draw(_header_counts)))
    broken = draw(_one_in_eight) == 0
    body = b""
    framing = "length"
    if broken:
        headers.append(draw(_broken_framing))
        framing = "none"
    elif method in ("PUT", "POST", "PATCH", "DELETE") and draw(st.booleans()):
        body = draw(_bodies)
        framing = draw(_framings)
    return Req(method, target, tuple(headers), body, framing, broken)


raw_requests = _raw_requests()

REC_MODES = ("missing", "bearer", "basic", "denied", "fail", "ratelimit") * 4 + ("slow",)
_rec_kinds = st.integers(0, 3)
_rec_modes = st.sampled_from(REC_MODES)
_rec_names = st.sampled_from(REC_NAMES)
_default_names = st.lists(valid_component, min_size=1, max_size=3)
_namespaces = st.sampled_from([REC_NS, REC_NS.upper(), HUB_NS, "unknown.example"])
_rec_digests = st.sampled_from(tuple(CONTENT.blobs)) | digests
_rec_methods = st.sampled_from(["GET", "GET", "HEAD"])
_rec_headers = st.lists(st.one_of(client_header, accept_header, range_header), max_size=3)


@st.composite
def _recording_requests(draw: st.DrawFn) -> Req:
    """Requests the recording upstream answers, with clients' credentials and markers."""
    choice = draw(_rec_kinds)
    ns = None
    if choice == 0:
        name = f"rec/{draw(_rec_modes)}/{draw(valid_component)}"
    elif choice == 1:
        name = draw(_rec_names)
    elif choice == 2:  # the default repository: the whole name goes to the upstream
        name = "/".join(draw(_default_names))
    else:
        name = pct(draw(names))
        ns = draw(_namespaces)
    if draw(st.booleans()):
        path = f"/v2/{name}/manifests/{pct(draw(references))}"
    else:
        path = f"/v2/{name}/blobs/{pct(draw(_rec_digests))}"
    if ns is not None:
        path += f"?ns={quote(ns)}"
    return Req(draw(_rec_methods), path.encode(), tuple(draw(_rec_headers)))


recording_requests = _recording_requests()


# -- the tests -----------------------------------------------------------------------------


def statuses(harness: Harness, route: str) -> set[int]:
    return {status for (seen, status), _ in harness.outcomes.items() if seen == route}


def test_generated_names_and_references_get_an_oci_error_or_the_content_never_a_500(
    harness: Harness,
) -> None:
    run_fuzz(harness, named_requests, 3000)
    # The names reached the checks they were made for: refused names, unknown ones.
    for route in ("manifests", "blobs"):
        assert {400, 404} <= statuses(harness, route), harness.outcomes


def test_real_content_with_generated_ranges_and_conditionals_is_served_byte_exact(
    harness: Harness,
) -> None:
    run_fuzz(harness, content_requests, 2500)
    # The generated requests did reach real content: cached answers, ranges, 304s.
    assert harness.outcomes[("manifests", 200)] >= 50
    assert harness.outcomes[("blobs", 200)] >= 50
    assert harness.outcomes[("blobs", 206)] >= 10
    assert harness.outcomes[("blobs", 304)] >= 10
    assert harness.outcomes[("manifests", 304)] >= 10
    assert harness.outcomes[("blobs", 416)] >= 3  # rarer: only a start past the end, -0


def test_generated_query_strings_are_refused_or_answered_never_a_500(harness: Harness) -> None:
    run_fuzz(harness, query_requests, 1500)
    # Both sides of the pagination checks were reached.
    assert harness.outcomes[("catalog", 400)] >= 10
    assert harness.outcomes[("catalog", 200)] >= 10
    assert harness.outcomes[("tags", 200)] >= 10


def test_generated_methods_headers_and_request_lines_are_refused_cleanly_never_a_500(
    harness: Harness,
) -> None:
    run_fuzz(harness, raw_requests, 2500)
    # Some were refused by the HTTP parser, others reached the app and its refusals.
    assert harness.parser_refusals > 0
    assert harness.outcomes[("manifests", 405)] + harness.outcomes[("uploads", 405)] > 0


def test_requests_for_an_authenticating_failing_upstream_never_leak_its_credentials(
    harness: Harness,
) -> None:
    run_fuzz(harness, recording_requests, 1000)
    requests = harness.rec.requests
    # The token flow and Basic authentication both happened, and content came through.
    assert any(r.path == "/token" for r in requests)
    assert any(r.header("Authorization") == f"Bearer {harness.rec.token}" for r in requests)
    assert any(r.header("Authorization") == BASIC for r in requests)
    assert harness.rec_content_served > 0
