"""What can go wrong talking to an upstream, one type per kind of failure.

The frontend maps each to an OCI error in one table (`frontend/errors.py`); the cacher
retries or dead-letters on them. Only `UpstreamDown` says the upstream is not answering,
and only it counts towards the circuit breaker (`health.py`): a 404, a refused
credential, corrupt content or a redirect we will not follow come from an upstream that
answered.
"""

from __future__ import annotations

import socket
import ssl
from typing import ClassVar

import aiohttp

# Every failure carries a cause class, the same word in its log line and in the label of
# registry_upstream_failures_total: dns, connect_refused, connect_timeout, read_timeout,
# connection_reset, tls, http_<status>, digest_mismatch, size_limit, breaker_open,
# rate_limited, busy, denied, target_refused, unavailable (and not_found, no failure).


class UpstreamError(Exception):
    cause: ClassVar[str] = "unavailable"

    def __init__(self, upstream: str, message: str, *, cause: str | None = None):
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.message = message
        self.cause = cause or type(self).cause  # type: ignore[misc]


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404: it does not have this content."""

    cause = "not_found"


class UpstreamUnavailable(UpstreamError):
    """Refused, timed out, 5xx or otherwise unusable; the content may exist."""


class UpstreamDown(UpstreamUnavailable):
    """The upstream did not answer: connection refused or cut, a timeout, or a 5xx."""


class UpstreamRateLimited(UpstreamUnavailable):
    cause = "rate_limited"

    def __init__(
        self, upstream: str, message: str, retry_after: float | None, *, cause: str | None = None
    ):
        super().__init__(upstream, message, cause=cause)
        self.retry_after = retry_after


class UpstreamBusy(UpstreamRateLimited):
    """This registry's own cap on concurrent downloads from the upstream was reached and no
    slot freed up in time; nothing was sent (a client is told to retry later)."""

    cause = "busy"


class UpstreamDenied(UpstreamUnavailable):
    """401/403 after authenticating: the credentials do not grant access."""

    cause = "denied"


class UpstreamCorrupt(UpstreamUnavailable):
    """The upstream sent content that does not match its digest."""

    cause = "digest_mismatch"


class ManifestTooLarge(UpstreamUnavailable):
    """The upstream's manifest exceeds `max_manifest_size`."""

    cause = "size_limit"


def cause_of(error: BaseException) -> str:
    """The cause class of a transport failure (aiohttp, asyncio, OS errors)."""
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(error, aiohttp.ClientConnectorError):
        os_error = error.os_error
        if isinstance(os_error, socket.gaierror):
            return "dns"
        if isinstance(os_error, ConnectionRefusedError):
            return "connect_refused"
        if isinstance(os_error, TimeoutError):
            return "connect_timeout"
        return "connect_refused" if "refused" in str(os_error).lower() else "connect_failed"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return "connect_timeout"
    if isinstance(error, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return "read_timeout"
    if isinstance(
        error,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | ConnectionResetError
        | BrokenPipeError,
    ):
        return "connection_reset"
    if isinstance(error, ConnectionRefusedError):
        return "connect_refused"
    return "unavailable"


class TargetRefused(UpstreamUnavailable):
    """A redirect or token realm points where this registry does not go: a loopback,
    link-local, private or metadata address (server-side request forgery), or a URL that is
    not HTTP."""

    cause = "target_refused"
