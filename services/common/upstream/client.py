"""One upstream registry: authenticated manifest and blob requests with timeouts.

Only URLs built from a configured upstream's base URL are requested, plus what that
upstream itself points to: its token realm and blob redirects (Docker Hub sends blobs to a
CDN). The `Authorization` header never follows a redirect to another host, and a client's
own headers are never forwarded.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from ..config import UpstreamSettings
from ..metrics import Metrics
from ..oci import MANIFEST_MEDIA_TYPES
from .auth import DEFAULT_TOKEN_LIFETIME_SECS, Challenge, TokenCache, basic_header, parse_challenge
from .errors import (
    ManifestTooLarge,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from .health import Refused, UpstreamHealth

log = logging.getLogger(__name__)

BLOB_CHUNK_SIZE = 256 * 1024
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}


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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _ssl_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    if settings.server_ca_bundle is None and settings.client_certificate is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.server_ca_bundle) if settings.server_ca_bundle else None
    )
    if settings.client_certificate is not None and settings.client_private_key is not None:
        context.load_cert_chain(str(settings.client_certificate), str(settings.client_private_key))
    return context


def refused_error(host: str, refused: Refused) -> UpstreamError:
    """A request the upstream's health refused, as the error a caller handles."""
    if refused.rate_limited:
        return UpstreamRateLimited(host, str(refused), refused.retry_after)
    return UpstreamUnavailable(host, str(refused))


class BlobDownload:
    """An open upstream blob response; iterate `chunks()`, then leave the `async with`."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        upstream: UpstreamClient,
        name: str,
        digest: str,
        started: float,
    ):
        self._response = response
        self._upstream = upstream
        self._name = name
        self._digest = digest
        self._started = started
        self.bytes_read = 0
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None

    async def chunks(self, chunk_size: int = BLOB_CHUNK_SIZE) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(chunk_size):
                self.bytes_read += len(chunk)
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            self._upstream.health.failed(False, f"blob download interrupted: {error!r}")
            raise UpstreamUnavailable(
                self._upstream.host, f"blob download interrupted: {error!r}"
            ) from error
        if self.size is not None and self.bytes_read != self.size:
            raise UpstreamUnavailable(
                self._upstream.host,
                f"blob download ended after {self.bytes_read} of {self.size} bytes",
            )

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
    ):
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.session = session
        self.tokens = tokens
        self.repository = repository
        self.host = settings.host
        self._ssl = _ssl_context(settings)
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_secs,
            sock_read=settings.read_timeout_secs,
        )
        # What the upstream asked for last time, so later requests authenticate up front.
        self._challenge: Challenge | None = None

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

    def _token_key(self, challenge: Challenge, scope: str) -> tuple[str, str, str, str]:
        return (
            challenge.realm or "",
            challenge.params.get("service", ""),
            scope,
            self.settings.username or "",
        )

    async def _authorization(self, name: str, refresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.settings.username is None or self.settings.password is None:
                return None
            return basic_header(self.settings.username, self.settings.password)
        scope = self._scope(name)
        key = self._token_key(challenge, scope)
        if refresh:
            self.tokens.drop(key)
        token = self.tokens.get(key)
        if token is None:
            token = await self._fetch_token(challenge, scope, key)
        return f"Bearer {token}"

    async def _fetch_token(
        self, challenge: Challenge, scope: str, key: tuple[str, str, str, str]
    ) -> str:
        realm = challenge.realm
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise UpstreamUnavailable(self.host, "token challenge without a usable realm")
        query = {"scope": scope}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        headers = {}
        if self.settings.username is not None and self.settings.password is not None:
            headers["Authorization"] = basic_header(self.settings.username, self.settings.password)
            query["account"] = self.settings.username
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        started = time.monotonic()
        try:
            async with self.session.get(
                url, headers=headers, timeout=self._timeout, ssl=self._ssl_for(url)
            ) as response:
                if response.status in (401, 403):
                    raise UpstreamDenied(self.host, f"token endpoint refused: {response.status}")
                if response.status == 429:
                    raise UpstreamRateLimited(
                        self.host,
                        "token endpoint rate-limited",
                        _retry_after(response.headers.get("Retry-After")),
                    )
                if response.status != 200:
                    raise UpstreamUnavailable(
                        self.host, f"token endpoint answered {response.status}"
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise UpstreamUnavailable(self.host, f"token request failed: {error!r}") from error
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
            "upstream token repository=%s upstream=%s scope=%s expires_in=%s duration_ms=%.1f",
            self.repository,
            self.host,
            scope,
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
        self, method: str, name: str, path: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send a request to the upstream, authenticating as challenged and following
        redirects; the caller releases the returned response."""
        try:
            probe = self.health.before_request()
        except Refused as refused:
            raise refused_error(self.host, refused) from None
        try:
            response = await self._authenticated_request(method, name, path, headers)
        except UpstreamDenied:
            self.health.succeeded(probe)  # it answered: healthy, just not for us
            raise
        except UpstreamError as error:
            self.health.failed(probe, error.message)
            raise
        if response.status == 429:
            self.health.rate_limited(probe, _retry_after(response.headers.get("Retry-After")))
        elif response.status >= 500:
            self.health.failed(probe, f"{method} answered {response.status}")
        else:
            self.health.succeeded(probe)
        return response

    async def _authenticated_request(
        self, method: str, name: str, path: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        url = f"{self.settings.base_url}/v2/{name}/{path}"
        headers = {"Accept-Encoding": "identity", **headers}
        refreshed = False
        authorization = await self._authorization(name, refresh=False)
        while True:
            response = await self._send_following_redirects(method, url, headers, authorization)
            if response.status != 401:
                return response
            challenge_header = response.headers.get("WWW-Authenticate", "")
            response.release()
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

    async def _send_following_redirects(
        self, method: str, url: str, headers: dict[str, str], authorization: str | None
    ) -> aiohttp.ClientResponse:
        origin = urlsplit(url).netloc
        for _ in range(self.settings.max_redirect + 1):
            request_headers = dict(headers)
            if authorization is not None and urlsplit(url).netloc == origin:
                request_headers["Authorization"] = authorization
            try:
                response = await self.session.request(
                    method,
                    url,
                    headers=request_headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                    ssl=self._ssl_for(url),
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                raise UpstreamUnavailable(self.host, f"{method} failed: {error!r}") from error
            self._track_rate_limit(response)
            location = response.headers.get("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                return response
            response.release()
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise UpstreamUnavailable(self.host, "redirect to a non-HTTP URL")
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

    def _raise_for_status(self, response: aiohttp.ClientResponse, what: str) -> None:
        status = response.status
        if status == 404:
            raise UpstreamNotFound(self.host, f"{what}: not found")
        if status == 429:
            raise UpstreamRateLimited(
                self.host,
                f"{what}: rate limited",
                _retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise UpstreamDenied(self.host, f"{what}: access denied ({status})")
        if status >= 300:
            raise UpstreamUnavailable(self.host, f"{what}: upstream answered {status}")

    async def head_manifest(self, name: str, reference: str, accept: str) -> ManifestHead:
        started = time.monotonic()
        status: int | str = "error"
        try:
            response = await self._request(
                "HEAD", name, f"manifests/{reference}", {"Accept": accept}
            )
            status = response.status
            response.release()
            self._raise_for_status(response, f"HEAD manifest {name}:{reference}")
            length = response.headers.get("Content-Length")
            return ManifestHead(
                digest=response.headers.get("Docker-Content-Digest"),
                media_type=_media_type(response.headers.get("Content-Type")),
                size=int(length) if length and length.isdigit() else None,
            )
        finally:
            self.log_fetch("HEAD", name, reference, status, 0, started)

    async def get_manifest(
        self, name: str, reference: str, accept: str, max_size: int
    ) -> FetchedManifest:
        started = time.monotonic()
        status: int | str = "error"
        size = 0
        try:
            response = await self._request(
                "GET", name, f"manifests/{reference}", {"Accept": accept}
            )
            try:
                status = response.status
                self._raise_for_status(response, f"GET manifest {name}:{reference}")
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
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                raise UpstreamUnavailable(self.host, f"manifest read failed: {error!r}") from error
            finally:
                response.release()
        finally:
            self.log_fetch("GET", name, reference, status, size, started)

    async def head_blob(self, name: str, digest: str) -> int | None:
        started = time.monotonic()
        status: int | str = "error"
        try:
            response = await self._request("HEAD", name, f"blobs/{digest}", {})
            status = response.status
            response.release()
            self._raise_for_status(response, f"HEAD blob {name}@{digest}")
            length = response.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
        finally:
            self.log_fetch("HEAD", name, digest, status, 0, started)

    async def open_blob(self, name: str, digest: str) -> BlobDownload:
        started = time.monotonic()
        try:
            response = await self._request("GET", name, f"blobs/{digest}", {})
        except UpstreamError:
            self.log_fetch("GET", name, digest, "error", 0, started)
            raise
        try:
            self._raise_for_status(response, f"GET blob {name}@{digest}")
        except UpstreamError:
            response.release()
            self.log_fetch("GET", name, digest, response.status, 0, started)
            raise
        return BlobDownload(response, self, name, digest, started)


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
