"""What a cache job must be before the cacher acts on it.

A job arrives from the queue, signed (`queue/jobs.py`), but every field is still checked
with the types the frontend checks a request with, so that no job can do what no pull
could: a name or tag that would leave its folder, a repository that is not configured, a
staged key that is not a staged blob of this digest, inline bytes larger than a pull could
have produced. Times are the cacher's: a job's time is only ever an earlier bound.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..common.errors import RegistryError
from ..common.oci import Digest, RepositoryName, Tag
from ..common.queue import CacheJob, JobKind
from ..common.queue.jobs import INLINE_LIMIT
from ..common.routing import Route, Router
from ..common.storage.staging import parse_staged_key

# RFC 6838 type/subtype (the parameters were dropped by the frontend).
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}$")


class InvalidJob(Exception):
    """The job is malformed or asks for what no pull could: dead-letter it."""


@dataclass(frozen=True, slots=True)
class CheckedJob:
    job: CacheJob
    route: Route
    digest: Digest
    tag: Tag | None
    # When the upstream was seen answering this (never later than the cacher's clock).
    observed_at: float


def check_job(job: CacheJob, router: Router, max_manifest_size: int) -> CheckedJob:
    try:
        digest = Digest.parse(job.digest)
        route = router.route_for(job.repository, job.remote_name)
        # The whole name, as the frontend validates a request's name: no "..", no "/" at
        # either end, the spec's grammar and length.
        RepositoryName.parse(route.storage_name)
        tag = Tag.parse(job.tag) if job.tag is not None else None
    except RegistryError as error:
        raise InvalidJob(f"{error.message}: {error.detail}") from error
    if not job.remote_name and not any(u.namespace_path for u in route.repository.upstreams):
        raise InvalidJob("a repository prefix alone is not an image name")
    if job.media_type is not None and not _MEDIA_TYPE_RE.match(job.media_type):
        raise InvalidJob(f"media type {job.media_type[:100]!r} is not a type/subtype")
    if job.size is not None and job.size < 0:
        raise InvalidJob(f"negative size {job.size}")
    if job.attempt < 0:
        raise InvalidJob(f"negative attempt {job.attempt}")
    if job.kind is JobKind.BLOB and tag is not None:
        raise InvalidJob("a blob job with a tag")
    if job.data is not None:
        limit = max_manifest_size if job.kind is JobKind.MANIFEST else INLINE_LIMIT
        if len(job.data) > limit:
            raise InvalidJob(f"{len(job.data)} inline bytes exceed the limit of {limit}")
        if job.size is not None and job.size != len(job.data):
            raise InvalidJob(f"size {job.size} but {len(job.data)} inline bytes")
    if job.staged is not None and (
        job.kind is not JobKind.BLOB or parse_staged_key(job.staged) != digest
    ):
        raise InvalidJob("staged key is not a staged blob of this digest")
    now = time.time()
    observed_at = min(job.enqueued_at, now) if job.enqueued_at > 0 else now
    return CheckedJob(job, route, digest, tag, observed_at)
