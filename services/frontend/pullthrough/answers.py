"""What the pull-through logic answers: plain values, turned into HTTP by `handlers`.

A failure to get something from the upstream, with nothing cached to answer instead, is an
`UpstreamFailure` naming what was asked for; `frontend/errors.py` maps it to an OCI error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ...common.oci import Digest
from ...common.upstream import UpstreamError
from .spool import Spool

STALE_WARNING = '299 - "upstream unreachable; serving a cached copy that may be stale"'


class Subject(StrEnum):
    MANIFEST = "manifest"
    BLOB = "blob"


class UpstreamFailure(Exception):
    """Nothing cached could answer and the upstream failed with `cause`."""

    def __init__(self, cause: UpstreamError, subject: Subject, detail: dict[str, Any]):
        super().__init__(str(cause))
        self.cause = cause
        self.subject = subject
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    digest: str
    media_type: str
    size: int
    data: bytes | None  # None: read it from storage (only needed for GET)
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob in storage: a file to send, a URL to redirect to, or a range reader."""

    digest: Digest
    size: int
    path: Path | None
    redirect_url: str | None
    read_range: Callable[[int, int], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class UpstreamBlobHead:
    """A HEAD of a blob that is not cached, answered by the upstream."""

    digest: Digest
    size: int | None


@dataclass(frozen=True, slots=True)
class SpooledBlob:
    """A blob arriving from the upstream into a spool that every client reads."""

    spool: Spool
    coalesced: bool


BlobAnswer = StoredBlob | UpstreamBlobHead | SpooledBlob
