"""A cache job: everything a cacher needs to persist one manifest or blob, as msgpack.

Jobs are idempotent (content already stored is acknowledged without a fetch) and delivered
at least once. The payload is versioned; a cacher dead-letters a version it does not know.

A job in a shared queue is sealed (`JobSigner`): an HMAC-SHA256 of the payload under the
configured `job_signing_key`, checked before the payload is even decoded. Whoever can write
to Redis but does not hold the key cannot make a cacher store anything; such an entry is
dead-lettered. `unpack` checks the type of every field; what the values mean (names, tags,
digests, sizes) the cacher checks with the frontend's own types before acting on them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import msgpack

from .. import tracing

JOB_VERSION = 1
# Blobs up to this size travel inside the job instead of being fetched again.
INLINE_LIMIT = 256 * 1024


class JobKind(StrEnum):
    BLOB = "blob"
    MANIFEST = "manifest"


class UnsupportedJobVersion(ValueError):
    pass


class JobRejected(ValueError):
    """A sealed job whose signature does not verify (or that is not sealed at all)."""


_MAC_SIZE = hashlib.sha256().digest_size


class JobSigner:
    """Seals packed jobs with an HMAC-SHA256 and opens only those that verify."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a job signing key must not be empty")
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def seal(self, payload: bytes) -> bytes:
        return self._mac(payload) + payload

    def open(self, sealed: bytes) -> bytes:
        """The payload of a sealed job; JobRejected when its signature does not verify."""
        mac, payload = sealed[:_MAC_SIZE], sealed[_MAC_SIZE:]
        if len(mac) != _MAC_SIZE or not hmac.compare_digest(mac, self._mac(payload)):
            raise JobRejected(
                "job signature does not verify (not written by a process holding this "
                "registry's job_signing_key)"
            )
        return payload


@dataclass(frozen=True, slots=True)
class CacheJob:
    kind: JobKind
    repository: str  # the configured repository key, e.g. "docker-io"
    remote_name: str  # the name below it, e.g. "library/nginx"
    digest: str
    size: int | None = None
    media_type: str | None = None
    tag: str | None = None
    data: bytes | None = field(default=None, repr=False)
    attempt: int = 0
    enqueued_at: float = field(default_factory=time.time)
    last_error: str | None = None
    # Blob bytes a frontend already downloaded and verified, waiting in storage under this
    # key for the cacher to check and commit (instead of fetching them a second time).
    staged: str | None = None
    # A tag's manifest: False when the upstream sent no digest header to check it against
    # (the tag is then re-checked on the next pull before immutability pins it).
    confirmed: bool = True
    # The W3C traceparent of the request that made the job: the cacher's span joins its
    # trace ([observability.tracing]; None when tracing is off).
    traceparent: str | None = field(default_factory=tracing.traceparent)
    version: int = JOB_VERSION

    @property
    def storage_name(self) -> str:
        return f"{self.repository}/{self.remote_name}" if self.remote_name else self.repository

    def next_attempt(self, error: str) -> CacheJob:
        return replace(self, attempt=self.attempt + 1, last_error=error[:500])

    def pack(self) -> bytes:
        payload: dict[str, Any] = {
            "v": self.version,
            "kind": str(self.kind),
            "repository": self.repository,
            "remote_name": self.remote_name,
            "digest": self.digest,
            "size": self.size,
            "media_type": self.media_type,
            "tag": self.tag,
            "data": self.data,
            "attempt": self.attempt,
            "enqueued_at": self.enqueued_at,
            "last_error": self.last_error,
            "staged": self.staged,
            "confirmed": self.confirmed,
            "traceparent": self.traceparent,
        }
        return msgpack.packb(payload, use_bin_type=True)

    @classmethod
    def unpack(cls, raw: bytes) -> CacheJob:
        try:
            payload = msgpack.unpackb(raw, raw=False)
        except Exception as error:
            raise UnsupportedJobVersion(f"undecodable job payload: {error}") from error
        if not isinstance(payload, dict) or payload.get("v") != JOB_VERSION:
            version = payload.get("v") if isinstance(payload, dict) else None
            raise UnsupportedJobVersion(f"unsupported job version: {version!r}")
        try:
            return cls(
                kind=JobKind(payload["kind"]),
                repository=_typed(payload, "repository", str),
                remote_name=_typed(payload, "remote_name", str),
                digest=_typed(payload, "digest", str),
                size=_optional(payload, "size", int),
                media_type=_optional(payload, "media_type", str),
                tag=_optional(payload, "tag", str),
                data=_optional(payload, "data", bytes),
                attempt=_typed(payload, "attempt", int, 0),
                enqueued_at=float(_typed(payload, "enqueued_at", (int, float), 0.0)),
                last_error=_optional(payload, "last_error", str),
                staged=_optional(payload, "staged", str),
                confirmed=payload.get("confirmed", True) is not False,
                traceparent=_traceparent(payload.get("traceparent")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise UnsupportedJobVersion(f"malformed job payload: {error}") from error


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparent(value: Any) -> str | None:
    """A W3C traceparent, or None (anything else is dropped, never an error)."""
    return value if isinstance(value, str) and _TRACEPARENT.match(value) else None


def _typed(payload: dict[str, Any], name: str, kind: Any, default: Any = None) -> Any:
    value = payload.get(name, default)
    # bool is an int to Python, never a size or an attempt here.
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} is {type(value).__name__}")
    return value


def _optional(payload: dict[str, Any], name: str, kind: type) -> Any:
    if payload.get(name) is None:
        return None
    return _typed(payload, name, kind)
