"""The small JSON records of the cache lifecycle (keys in keys.py).

- a pull time: when a tag or a digest was last pulled (written by frontends, batched);
- a release mark: since when no manifest needs a blob, and why (prune, DELETE, ...);
- the usage: bytes and objects of committed content, as last measured by a cacher;
- the invalidation token: rewritten by whoever deletes, read by every frontend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Self, TypeVar


class _Record(Protocol):
    @classmethod
    def from_json(cls, data: bytes) -> Self: ...


R = TypeVar("R", bound=_Record)


def parse_record(kind: type[R], data: bytes | None) -> R | None:
    """The record in `data`, or None when there is none or it does not parse (a record
    half-written by hand, or by an older version: the lifecycle treats it as absent)."""
    if data is None:
        return None
    try:
        return kind.from_json(data)
    except (ValueError, KeyError, TypeError):
        return None


def _load(data: bytes) -> dict[str, Any]:
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return raw


def _dump(record: Any) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class PullTime:
    pulled_at: float

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, data: bytes) -> PullTime:
        return cls(float(_load(data)["pulled_at"]))


@dataclass(frozen=True, slots=True)
class Released:
    """No manifest referenced the blob at `at` (a unix time), because of `reason`."""

    at: float
    reason: str

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, data: bytes) -> Released:
        raw = _load(data)
        return cls(float(raw["at"]), str(raw.get("reason", "gc")))


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """Committed content as a cacher last measured it (a listing, not on a request path):
    `total_bytes` and `blobs` count every blob (manifests are blobs too); `manifests` and
    `tags` count the manifest and tag records of every repository."""

    total_bytes: int
    blobs: int
    manifests: int
    tags: int
    measured_at: float  # unix time

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, data: bytes) -> StorageUsage:
        raw = _load(data)
        return cls(
            total_bytes=int(raw["total_bytes"]),
            blobs=int(raw["blobs"]),
            manifests=int(raw.get("manifests", 0)),
            tags=int(raw.get("tags", 0)),
            measured_at=float(raw["measured_at"]),
        )


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A token that changes whenever content is about to be deleted: a frontend that sees
    it change forgets what it remembers (see invalidation.py)."""

    token: str
    written_at: float

    def to_json(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_json(cls, data: bytes) -> Invalidation:
        raw = _load(data)
        return cls(str(raw["token"]), float(raw.get("written_at", 0.0)))
