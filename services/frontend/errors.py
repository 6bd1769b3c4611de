"""Where an exception becomes an OCI error: the one table, and the one rendering.

`to_registry_error` turns anything a handler raised into a `RegistryError`; the
`oci_errors` middleware renders it with `error_response`. Upstream failures go through
`UPSTREAM_FAILURES`, the first row whose type matches wins (subclasses first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web

from ..common.errors import (
    BackendUnavailable,
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NotFound,
    RegistryError,
    SizeInvalid,
    TooManyRequests,
    Unsupported,
)
from ..common.queue import QueueUnavailable
from ..common.storage.objects import StorageUnavailable
from ..common.upstream import (
    ManifestTooLarge,
    UpstreamBusy,
    UpstreamCorrupt,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from .pullthrough.answers import Subject, UpstreamFailure

log = logging.getLogger(__name__)

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def _not_found(failure: UpstreamFailure) -> RegistryError:
    if failure.subject is Subject.MANIFEST:
        return ManifestUnknown("manifest unknown", detail=failure.detail)
    return BlobUnknown("blob unknown to registry", detail=failure.detail)


def _too_large(failure: UpstreamFailure) -> RegistryError:
    return SizeInvalid("the manifest exceeds the registry's max_manifest_size")


def _rate_limited(failure: UpstreamFailure) -> RegistryError:
    assert isinstance(failure.cause, UpstreamRateLimited)
    headers = {}
    if failure.cause.retry_after is not None:
        headers["Retry-After"] = str(int(failure.cause.retry_after + 0.999))
    return TooManyRequests("upstream rate limit reached", headers=headers)


def _busy(failure: UpstreamFailure) -> RegistryError:
    assert isinstance(failure.cause, UpstreamRateLimited)
    error = _rate_limited(failure)
    error.message = "this registry's download limit for that upstream is reached; retry later"
    return error


def _denied(failure: UpstreamFailure) -> RegistryError:
    return Denied(
        "the upstream refused access (the repository may not exist or needs credentials)",
        detail={"upstream": failure.cause.upstream},
    )


def _corrupt(failure: UpstreamFailure) -> RegistryError:
    return BackendUnavailable(
        "the upstream sent content that does not match its digest; nothing was cached",
        detail={"upstream": failure.cause.upstream},
    )


def _unavailable(failure: UpstreamFailure) -> RegistryError:
    return BackendUnavailable(
        "upstream unavailable and nothing cached", detail={"upstream": failure.cause.upstream}
    )


# How an upstream failure looks to a client when nothing cached can answer.
UPSTREAM_FAILURES: tuple[
    tuple[type[UpstreamError], Callable[[UpstreamFailure], RegistryError]], ...
] = (
    (UpstreamNotFound, _not_found),
    (ManifestTooLarge, _too_large),
    (UpstreamBusy, _busy),
    (UpstreamRateLimited, _rate_limited),
    (UpstreamDenied, _denied),
    (UpstreamCorrupt, _corrupt),
    (UpstreamUnavailable, _unavailable),
    (UpstreamError, _unavailable),
)


def from_upstream_failure(failure: UpstreamFailure) -> RegistryError:
    for kind, convert in UPSTREAM_FAILURES:
        if isinstance(failure.cause, kind):
            return convert(failure)
    raise AssertionError("UPSTREAM_FAILURES ends with UpstreamError")


def _from_http_exception(exc: web.HTTPException) -> RegistryError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        return Unsupported("method not allowed")
    if exc.status == 413:
        return SizeInvalid("request too large")
    error = RegistryError(exc.reason or "request failed")
    error.status = exc.status  # type: ignore[misc]
    return error


def to_registry_error(request: web.Request, error: Exception) -> RegistryError:
    """Any exception a handler raised, as the error its client is told."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, UpstreamFailure):
        answer = from_upstream_failure(error)
        # The line that says what a failed pull was answered, with the upstream's cause.
        log.warning(
            "pull failed method=%s path=%s upstream=%s cause=%s answered=%d %s",
            request.method,
            request.path[:300],
            error.cause.upstream,
            error.cause.cause,
            answer.status,
            answer.code,
        )
        return answer
    if isinstance(error, StorageUnavailable | QueueUnavailable):
        log.warning(
            "backend unavailable method=%s path=%s: %s", request.method, request.path, error
        )
        return BackendUnavailable("storage unavailable; retry later")
    if isinstance(error, web.HTTPException):
        return _from_http_exception(error)
    # Never a traceback to the client; the log has it.
    log.error("unhandled error method=%s path=%s", request.method, request.path, exc_info=error)
    return RegistryError("internal error; see the registry log")


def error_response(error: RegistryError) -> web.Response:
    headers = dict(error.headers)
    headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    return web.Response(
        status=error.status,
        body=json.dumps(error.body()).encode(),
        content_type="application/json",
        headers=headers,
    )
