"""What can go wrong talking to an upstream, one type per kind of failure.

The frontend maps each to an OCI error in one table (`frontend/errors.py`); the cacher
retries or dead-letters on them.
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


class UpstreamRateLimited(UpstreamUnavailable):
    def __init__(self, upstream: str, message: str, retry_after: float | None):
        super().__init__(upstream, message)
        self.retry_after = retry_after


class UpstreamDenied(UpstreamUnavailable):
    """401/403 after authenticating: the credentials do not grant access."""


class UpstreamCorrupt(UpstreamUnavailable):
    """The upstream sent content that does not match its digest."""


class ManifestTooLarge(UpstreamUnavailable):
    """The upstream's manifest exceeds `max_manifest_size`."""
