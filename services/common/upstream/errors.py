"""What can go wrong talking to an upstream, one type per kind of failure.

The frontend maps each to an OCI error in one table (`frontend/errors.py`); the cacher
retries or dead-letters on them. Only `UpstreamDown` says the upstream is not answering,
and only it counts towards the circuit breaker (`health.py`): a 404, a refused
credential, corrupt content or a redirect we will not follow come from an upstream that
answered.
"""

from __future__ import annotations


class UpstreamError(Exception):
    def __init__(self, upstream: str, message: str):
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.message = message


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404: it does not have this content."""


class UpstreamUnavailable(UpstreamError):
    """Refused, timed out, 5xx or otherwise unusable; the content may exist."""


class UpstreamDown(UpstreamUnavailable):
    """The upstream did not answer: connection refused or cut, a timeout, or a 5xx."""


class UpstreamRateLimited(UpstreamUnavailable):
    def __init__(self, upstream: str, message: str, retry_after: float | None):
        super().__init__(upstream, message)
        self.retry_after = retry_after


class UpstreamBusy(UpstreamRateLimited):
    """This registry's own cap on concurrent downloads from the upstream was reached and no
    slot freed up in time; nothing was sent (a client is told to retry later)."""


class UpstreamDenied(UpstreamUnavailable):
    """401/403 after authenticating: the credentials do not grant access."""


class UpstreamCorrupt(UpstreamUnavailable):
    """The upstream sent content that does not match its digest."""


class ManifestTooLarge(UpstreamUnavailable):
    """The upstream's manifest exceeds `max_manifest_size`."""


class TargetRefused(UpstreamUnavailable):
    """A redirect or token realm points where this registry does not go: a loopback,
    link-local, private or metadata address (server-side request forgery), or a URL that is
    not HTTP."""
