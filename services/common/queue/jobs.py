"""A cache job: everything a cacher needs to persist one manifest or blob, as msgpack.

Jobs are idempotent (content already stored is acknowledged without a fetch) and delivered
at least once. The payload is versioned; a cacher dead-letters a version it does not know.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import msgpack

JOB_VERSION = 1
# Blobs up to this size travel inside the job instead of being fetched again.
INLINE_LIMIT = 256 * 1024


class JobKind(StrEnum):
    BLOB = "blob"
    MANIFEST = "manifest"


class UnsupportedJobVersion(ValueError):
    pass


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
                repository=str(payload["repository"]),
                remote_name=str(payload["remote_name"]),
                digest=str(payload["digest"]),
                size=payload.get("size"),
                media_type=payload.get("media_type"),
                tag=payload.get("tag"),
                data=payload.get("data"),
                attempt=int(payload.get("attempt", 0)),
                enqueued_at=float(payload.get("enqueued_at", 0.0)),
                last_error=payload.get("last_error"),
                staged=payload.get("staged"),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise UnsupportedJobVersion(f"malformed job payload: {error}") from error
