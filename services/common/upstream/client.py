"""One upstream registry: authenticated manifest and blob requests with timeouts.

Only URLs built from a configured upstream's base URL are requested, plus what that
upstream itself points to: its token realm and blob redirects (Docker Hub sends blobs to a
CDN), each checked by `targets.TargetGuard` first. Credentials belong to the upstream:

- the configured username/password (Basic, or for the token realm) and the tokens the
  realm issues go only to the upstream's own origin (scheme, host and port) and to the
  realm named by the upstream's own 401, never to a redirect target;
- a 401 from a redirect target (a CDN with its own token service) is answered with an
  anonymous token from the realm it names, sent to that target only, and is never
  remembered as the upstream's challenge;
- an https upstream never sends credentials over http (an http realm gets none).

A client's own headers are never forwarded. Blob downloads take a slot of the upstream's
`max_concurrent_downloads` (`slots.py`), so they never starve the short requests; every
request has an overall deadline (`request_timeout_secs`; for a blob, until its headers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from .. import tracing
from ..config import UpstreamSettings
from ..metrics import Metrics
from ..oci import MANIFEST_MEDIA_TYPES, MEDIA_OCI_INDEX
from ..tlsclient import client_context
from .auth import (
    DEFAULT_TOKEN_LIFETIME_SECS,
    Challenge,
    TokenCache,
    TokenKey,
    basic_header,
    parse_challenge,
)
from .errors import (
    ManifestTooLarge,
    UpstreamDenied,
    UpstreamDown,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
    cause_of,
)
from .health import Refused, UpstreamHealth
from .slots import DownloadSlots
from .socketbody import Progress, Sink, SocketBody, SocketReadFailed
from .targets import TargetGuard

log = logging.getLogger(__name__)

BLOB_CHUNK_SIZE = 256 * 1024
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """Scheme, host and port: where credentials may go is decided by all three."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str | None
    media_type: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest_header: str | None
    filters_applied: str | None = None  # OCI-Filters-Applied of a referrers answer
    link: str | None = None  # the Link header of a paged answer (tags/list)


async def _error_code(response: aiohttp.ClientResponse) -> str | None:
    """`errors[0].code` of an OCI error body (read up to 4 KiB), or None."""
    if response.method == "HEAD" or "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        body = await response.content.read(4096)
        errors = json.loads(body).get("errors")
        code = errors[0].get("code") if isinstance(errors, list) and errors else None
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        return None
    return code[:40] if isinstance(code, str) and code.isascii() else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _ssl_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    return client_context(
        settings.server_ca_bundle, settings.client_certificate, settings.client_private_key
    )


def refused_error(host: str, refused: Refused) -> UpstreamError:
    """A request the upstream's health refused, as the error a caller handles."""
    if refused.rate_limited:
        return UpstreamRateLimited(host, str(refused), refused.retry_after)
    return UpstreamUnavailable(host, str(refused), cause="breaker_open")


class BlobDownload:
    """An open upstream blob response; iterate `chunks()`, then leave the `async with`
    (which also gives back its download slot)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        upstream: UpstreamClient,
        name: str,
        digest: str,
        started: float,
        release: Callable[[], None],
    ):
        self._response = response
        self._upstream = upstream
        self._name = name
        self._digest = digest
        self._started = started
        self._release: Callable[[], None] | None = release
        self.bytes_read = 0
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None

    async def chunks(self, chunk_size: int = BLOB_CHUNK_SIZE) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(chunk_size):
                self.bytes_read += len(chunk)
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._interrupted(error, "") from error
        if self.size is not None and self.bytes_read != self.size:
            raise UpstreamUnavailable(
                self._upstream.host,
                f"blob download ended after {self.bytes_read} of {self.size} bytes",
            )

    def socket_body(self) -> SocketBody | None:
        """The body to be read straight from its socket (`pump`), when it can be."""
        return SocketBody.of(self._response, self._upstream.settings.read_timeout_secs)

    async def pump(self, body: SocketBody, sink: Sink, progress: Progress) -> None:
        """Read `body` into `sink` in a thread; instead of `chunks()`, not with it."""

        def counted(size: int) -> None:
            self.bytes_read += size
            progress(size)

        try:
            await body.pump(sink, counted)
        except SocketReadFailed as failure:
            raise self._interrupted(
                failure.error, f" after {failure.received} bytes"
            ) from failure.error

    def _interrupted(self, error: BaseException, where: str) -> UpstreamDown:
        """The upstream broke off the body: a failure of its health, logged and counted."""
        self._upstream.health.failed(False, f"blob download interrupted: {error!r}")
        down = UpstreamDown(
            self._upstream.host,
            f"blob download interrupted: {error!r}{where}",
            cause=cause_of(error),
        )
        self._upstream.note_failure(down, "GET", self._name, self._digest)
        return down

    def failed(self, cause: str, message: str) -> None:
        """The download's bytes were refused (a digest mismatch, a size limit): counted
        with the upstream's failures."""
        error = UpstreamUnavailable(self._upstream.host, message, cause=cause)
        self._upstream.note_failure(error, "GET", self._name, self._digest)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._response.release()
        if exc is not None:
            self._response.close()
        release, self._release = self._release, None
        if release is not None:
            release()
        self._upstream.log_fetch(
            "GET",
            self._name,
            self._digest,
            self._response.status if exc is None else f"aborted ({type(exc).__name__})",
            self.bytes_read,
            self._started,
        )


class UpstreamClient:
    def __init__(
        self,
        settings: UpstreamSettings,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        repository: str,
        metrics: Metrics,
        health: UpstreamHealth,
        slots: DownloadSlots,
        guard: TargetGuard,
    ):
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.slots = slots
        self.guard = guard
        self.session = session
        self.tokens = tokens
        self.repository = repository
        self.host = settings.host
        self.origin = origin_of(settings.base_url)
        self._ssl = _ssl_context(settings)
        # Bulk transfers (blob bodies): no overall limit, a read timeout between bytes.
        self._bulk_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_secs,
            sock_connect=settings.connect_timeout_secs,
            sock_read=settings.read_timeout_secs,
        )
        # Everything else (manifests, HEADs, tokens): an overall deadline too.
        self._timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_secs,
            connect=settings.connect_timeout_secs,
            sock_connect=settings.connect_timeout_secs,
            sock_read=settings.read_timeout_secs,
        )
        # What the upstream asked for last time, so later requests authenticate up front.
        # Only ever a challenge of the upstream's own origin.
        self._challenge: Challenge | None = None
        self._warned_plain_realm = False

    def __repr__(self) -> str:
        return f"UpstreamClient({self.settings.url!r})"

    # -- logging ----------------------------------------------------------------------------

    def log_fetch(
        self, method: str, name: str, reference: str, status: int | str, size: int, started: float
    ) -> None:
        self.metrics.upstream_requests.labels(self.host, method, str(status)).inc()
        if size:
            self.metrics.upstream_bytes.labels(self.host).inc(size)
        log.info(
            "upstream fetch repository=%s upstream=%s name=%s reference=%s method=%s "
            "status=%s bytes=%d duration_ms=%.1f",
            self.repository,
            self.host,
            name,
            reference,
            method,
            status,
            size,
            (time.monotonic() - started) * 1000,
        )

    # -- authentication ---------------------------------------------------------------------

    def _scope(self, name: str) -> str:
        return f"repository:{name}:pull"

    def _credentials_for(self, realm: str) -> tuple[str, str] | None:
        """The configured credentials, when they may go to `realm` (named by the
        upstream's own challenge): never over http from an https upstream."""
        if self.settings.username is None or self.settings.password is None:
            return None
        if self.origin[0] == "https" and urlsplit(realm).scheme != "https":
            if not self._warned_plain_realm:
                self._warned_plain_realm = True
                log.warning(
                    "upstream %s names a plain-http token realm; its credentials are not sent "
                    "there (asking for an anonymous token)",
                    self.host,
                )
            return None
        return self.settings.username, self.settings.password

    async def _authorization(self, name: str, refresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.settings.username is None or self.settings.password is None:
                return None
            return basic_header(self.settings.username, self.settings.password)
        scope = self._scope(name)
        credentials = self._credentials_for(challenge.realm or "")
        return await self._bearer(challenge, scope, credentials, refresh)

    async def _bearer(
        self,
        challenge: Challenge,
        scope: str,
        credentials: tuple[str, str] | None,
        refresh: bool,
    ) -> str:
        key: TokenKey = (
            challenge.realm or "",
            challenge.params.get("service", ""),
            scope,
            credentials[0] if credentials else "",
        )
        if refresh:
            self.tokens.drop(key)
        token = self.tokens.get(key)
        if token is None:
            token = await self._fetch_token(challenge, scope, key, credentials)
        return f"Bearer {token}"

    async def _fetch_token(
        self,
        challenge: Challenge,
        scope: str,
        key: TokenKey,
        credentials: tuple[str, str] | None,
    ) -> str:
        realm = challenge.realm
        if not realm:
            raise UpstreamUnavailable(self.host, "token challenge without a realm")
        await self.guard.check(realm, "token realm")
        query = {"scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {}
        if credentials is not None:
            headers["Authorization"] = basic_header(*credentials)
            query["account"] = credentials[0]
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        started = time.monotonic()
        try:
            async with self.session.get(
                url,
                headers=headers,
                timeout=self._timeout,
                ssl=self._ssl_for(url),
                allow_redirects=False,
            ) as response:
                if response.status in (401, 403):
                    raise UpstreamDenied(self.host, f"token endpoint refused: {response.status}")
                if response.status == 429:
                    raise UpstreamRateLimited(
                        self.host,
                        "token endpoint rate-limited",
                        _retry_after(response.headers.get("Retry-After")),
                    )
                if response.status >= 500:
                    raise UpstreamDown(
                        self.host,
                        f"token endpoint answered {response.status}",
                        cause=f"http_{response.status}",
                    )
                if response.status != 200:
                    raise UpstreamUnavailable(
                        self.host, f"token endpoint answered {response.status}"
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise UpstreamDown(
                self.host, f"token request failed: {error!r}", cause=cause_of(error)
            ) from error
        except ValueError as error:
            raise UpstreamUnavailable(self.host, f"token endpoint sent no JSON: {error}") from error
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamUnavailable(self.host, "token endpoint returned no token")
        expires_in = body.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and expires_in > 0
            else DEFAULT_TOKEN_LIFETIME_SECS
        )
        self.tokens.put(key, token, lifetime)
        log.debug(
            "upstream token repository=%s upstream=%s scope=%s anonymous=%s expires_in=%s "
            "duration_ms=%.1f",
            self.repository,
            self.host,
            scope,
            credentials is None,
            lifetime,
            (time.monotonic() - started) * 1000,
        )
        return token

    def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        # Our CA bundle and client certificate are for the upstream's own host only;
        # True is aiohttp's default verification.
        if urlsplit(url).netloc == self.host and self._ssl is not None:
            return self._ssl
        return True

    # -- requests ---------------------------------------------------------------------------

    async def _request(
        self, method: str, name: str, path: str, headers: dict[str, str], *, bulk: bool = False
    ) -> aiohttp.ClientResponse:
        """Send a request to the upstream, authenticating as challenged and following
        redirects; the caller releases the returned response."""
        try:
            probe = self.health.before_request()
        except Refused as refused:
            raise refused_error(self.host, refused) from None
        try:
            if tracing.enabled():
                with tracing.span(
                    f"upstream {method}",
                    {"upstream.host": self.host, "upstream.path": path.split("?", 1)[0]},
                ):
                    response = await self._authenticated_request(method, name, path, headers, bulk)
                    tracing.annotate("http.response.status_code", response.status)
            else:
                response = await self._authenticated_request(method, name, path, headers, bulk)
        except UpstreamDown as error:
            self.health.failed(probe, error.message)
            raise
        except UpstreamError:
            self.health.succeeded(probe)  # it answered: healthy, just not usable for this
            raise
        except BaseException:
            self.health.abandoned(probe)  # cancelled: says nothing about the upstream
            raise
        if response.status == 429:
            self.health.rate_limited(probe, _retry_after(response.headers.get("Retry-After")))
        elif response.status >= 500:
            self.health.failed(probe, f"{method} answered {response.status}")
        else:
            self.health.succeeded(probe)
        return response

    async def _authenticated_request(
        self, method: str, name: str, path: str, headers: dict[str, str], bulk: bool
    ) -> aiohttp.ClientResponse:
        url = f"{self.settings.base_url}/v2/{name}/{path}"
        headers = {"Accept-Encoding": "identity", **headers}
        timeout = self._bulk_timeout if bulk else self._timeout
        refreshed = False
        authorization = await self._authorization(name, refresh=False)
        while True:
            response, final_url = await self._send_following_redirects(
                method, url, headers, authorization, self.origin, timeout
            )
            if response.status != 401:
                return response
            challenge_header = response.headers.get("WWW-Authenticate", "")
            response.release()
            if origin_of(final_url) != self.origin:
                return await self._answer_redirect_target(
                    method, name, final_url, headers, challenge_header, timeout
                )
            challenge = parse_challenge(challenge_header)
            if challenge is None:
                raise UpstreamDenied(self.host, "401 without a usable WWW-Authenticate challenge")
            if refreshed:
                raise UpstreamDenied(self.host, f"401 after authenticating ({challenge.scheme})")
            if challenge.scheme == "basic" and self.settings.username is None:
                raise UpstreamDenied(self.host, "upstream requires credentials; none configured")
            self._challenge = challenge
            authorization = await self._authorization(name, refresh=True)
            refreshed = True

    async def _answer_redirect_target(
        self,
        method: str,
        name: str,
        url: str,
        headers: dict[str, str],
        challenge_header: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """A redirect target (a CDN) answered 401: ask the realm it names for an anonymous
        token and show it to that target only. The upstream's credentials stay home."""
        target = urlsplit(url).netloc
        challenge = parse_challenge(challenge_header)
        if challenge is None or challenge.scheme != "bearer" or not challenge.realm:
            raise UpstreamDenied(
                self.host,
                f"redirect target {target} asks for credentials; the upstream's are sent "
                "only to the upstream",
            )
        scope = challenge.params.get("scope") or self._scope(name)
        authorization = await self._bearer(challenge, scope, None, refresh=False)
        response, _ = await self._send_following_redirects(
            method, url, headers, authorization, origin_of(url), timeout
        )
        if response.status == 401:
            response.release()
            raise UpstreamDenied(
                self.host, f"redirect target {target} refused the anonymous token of its realm"
            )
        return response

    async def _send_following_redirects(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        authorization: str | None,
        authorized: Origin,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[aiohttp.ClientResponse, str]:
        """The first non-redirect response and its URL. `authorization` goes only to
        requests whose origin is `authorized`."""
        for _ in range(self.settings.max_redirect + 1):
            request_headers = dict(headers)
            if authorization is not None and origin_of(url) == authorized:
                request_headers["Authorization"] = authorization
            try:
                # The overall deadline until the headers, also for a blob (whose body is
                # bounded by the read timeout between bytes only).
                async with asyncio.timeout(self.settings.request_timeout_secs):
                    response = await self.session.request(
                        method,
                        url,
                        headers=request_headers,
                        allow_redirects=False,
                        timeout=timeout,
                        ssl=self._ssl_for(url),
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                raise UpstreamDown(
                    self.host, f"{method} failed: {error!r}", cause=cause_of(error)
                ) from error
            self._track_rate_limit(response)
            location = response.headers.get("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                return response, url
            response.release()
            url = urljoin(url, location)
            await self.guard.check(url, "redirect")
            if response.status == 303:
                method = "GET"
        raise UpstreamUnavailable(self.host, f"more than {self.settings.max_redirect} redirects")

    def _track_rate_limit(self, response: aiohttp.ClientResponse) -> None:
        # Docker Hub: "ratelimit-remaining: 76;w=21600".
        remaining = response.headers.get("ratelimit-remaining")
        if remaining:
            count = remaining.split(";", 1)[0].strip()
            if count.isdigit():
                self.metrics.ratelimit_remaining.labels(self.host).set(int(count))

    async def _check_status(self, response: aiohttp.ClientResponse, what: str) -> None:
        """Raise the error a non-2xx answer means, with its cause class (`http_<status>`)
        and, where the answer has an OCI error body, the upstream's error code."""
        status = response.status
        if status < 300:
            return
        if status == 404:  # the common miss: its body says nothing more
            raise UpstreamNotFound(self.host, f"{what}: not found")
        code = await _error_code(response)
        said = f"{what}: upstream answered {status}{f' {code}' if code else ''}"
        if status == 429:
            raise UpstreamRateLimited(
                self.host, said, _retry_after(response.headers.get("Retry-After"))
            )
        if status in (401, 403):
            raise UpstreamDenied(self.host, f"{said} (access denied)", cause=f"http_{status}")
        if status >= 500:
            raise UpstreamDown(self.host, said, cause=f"http_{status}")
        raise UpstreamUnavailable(self.host, said, cause=f"http_{status}")

    def note_failure(self, error: UpstreamError, method: str, name: str, reference: str) -> None:
        """Every failure of a request to this upstream: its cause in the log and metric."""
        if isinstance(error, UpstreamNotFound):
            return
        self.metrics.upstream_failures.labels(self.host, error.cause).inc()
        log.warning(
            "upstream failure repository=%s upstream=%s cause=%s method=%s name=%s "
            "reference=%s detail=%s",
            self.repository,
            self.host,
            error.cause,
            method,
            name,
            reference,
            error.message[:300],
        )

    async def head_manifest(self, name: str, reference: str, accept: str) -> ManifestHead:
        started = time.monotonic()
        status: int | str = "error"
        try:
            response = await self._request(
                "HEAD", name, f"manifests/{reference}", {"Accept": accept}
            )
            status = response.status
            response.release()
            await self._check_status(response, f"HEAD manifest {name}:{reference}")
            length = response.headers.get("Content-Length")
            return ManifestHead(
                digest=response.headers.get("Docker-Content-Digest"),
                media_type=_media_type(response.headers.get("Content-Type")),
                size=int(length) if length and length.isdigit() else None,
            )
        except UpstreamError as error:
            self.note_failure(error, "HEAD", name, reference)
            raise
        finally:
            self.log_fetch("HEAD", name, reference, status, 0, started)

    async def get_manifest(
        self, name: str, reference: str, accept: str, max_size: int
    ) -> FetchedManifest:
        return await self._get_document(name, f"manifests/{reference}", reference, accept, max_size)

    async def get_referrers(
        self, name: str, digest: str, artifact_type: str | None, max_size: int
    ) -> FetchedManifest:
        """The upstream's referrers index of `digest` (OCI 1.1 referrers API)."""
        query = f"?{urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        return await self._get_document(
            name, f"referrers/{digest}{query}", f"referrers/{digest}", MEDIA_OCI_INDEX, max_size
        )

    async def list_tags(
        self, name: str, n: int | None, last: str | None, max_size: int
    ) -> FetchedManifest:
        """One page of the upstream's tag list (its `Link` names the next one)."""
        query = {key: str(value) for key, value in (("n", n), ("last", last)) if value is not None}
        path = f"tags/list?{urlencode(query)}" if query else "tags/list"
        return await self._get_document(name, path, "tags/list", "application/json", max_size)

    async def _get_document(
        self, name: str, path: str, reference: str, accept: str, max_size: int
    ) -> FetchedManifest:
        """A JSON document of at most `max_size` bytes (a manifest, a referrers index)."""
        started = time.monotonic()
        status: int | str = "error"
        size = 0
        try:
            response = await self._request("GET", name, path, {"Accept": accept})
            try:
                status = response.status
                await self._check_status(response, f"GET {name} {reference}")
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_size:
                    raise ManifestTooLarge(
                        self.host, f"manifest of {length} bytes exceeds {max_size}"
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > max_size:
                        raise ManifestTooLarge(self.host, f"manifest exceeds {max_size} bytes")
                size = len(data)
                media_type = _media_type(response.headers.get("Content-Type")) or _sniff_media_type(
                    bytes(data)
                )
                return FetchedManifest(
                    data=bytes(data),
                    media_type=media_type,
                    digest_header=response.headers.get("Docker-Content-Digest"),
                    filters_applied=response.headers.get("OCI-Filters-Applied"),
                    link=response.headers.get("Link"),
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                self.health.failed(False, f"manifest read failed: {error!r}")
                raise UpstreamDown(
                    self.host, f"manifest read failed: {error!r}", cause=cause_of(error)
                ) from error
            finally:
                response.release()
        except UpstreamError as error:
            self.note_failure(error, "GET", name, reference)
            raise
        finally:
            self.log_fetch("GET", name, reference, status, size, started)

    async def head_blob(self, name: str, digest: str) -> int | None:
        started = time.monotonic()
        status: int | str = "error"
        try:
            response = await self._request("HEAD", name, f"blobs/{digest}", {})
            status = response.status
            response.release()
            await self._check_status(response, f"HEAD blob {name}@{digest}")
            length = response.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
        except UpstreamError as error:
            self.note_failure(error, "HEAD", name, digest)
            raise
        finally:
            self.log_fetch("HEAD", name, digest, status, 0, started)

    async def open_blob(self, name: str, digest: str) -> BlobDownload:
        started = time.monotonic()
        await self.slots.acquire()
        try:
            response = await self._request("GET", name, f"blobs/{digest}", {}, bulk=True)
        except BaseException as error:
            self.slots.release()
            if isinstance(error, UpstreamError):
                self.note_failure(error, "GET", name, digest)
            self.log_fetch("GET", name, digest, "error", 0, started)
            raise
        try:
            await self._check_status(response, f"GET blob {name}@{digest}")
        except UpstreamError as error:
            self.note_failure(error, "GET", name, digest)
            response.release()
            self.slots.release()
            self.log_fetch("GET", name, digest, response.status, 0, started)
            raise
        return BlobDownload(response, self, name, digest, started, self.slots.release)


def accept_header(client_accept: str | None = None) -> str:
    """All manifest types we pass through, plus whatever else the client asked for."""
    types = list(MANIFEST_MEDIA_TYPES)
    if client_accept:
        for part in client_accept.split(","):
            media = part.split(";")[0].strip()
            if media and media not in types and media != "*/*":
                types.append(media)
    return ", ".join(types)


def _media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";")[0].strip() or None


def _sniff_media_type(data: bytes) -> str:
    try:
        media = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        media = None
    return media if isinstance(media, str) else "application/vnd.oci.image.manifest.v1+json"
