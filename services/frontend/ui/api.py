"""The UI's JSON API: Angos's extension endpoints with their shapes (extended with what a
cache knows), plus ours. The pages show exactly this data (`views`). README documents it.

    GET  /v2/_angos/ui/config                      ui-config
    GET  /v2/_angos/repositories/list              list-repositories
    GET  /v2/_angos/namespaces/list?repository=R   list-namespaces   (&q= &n= &last=)
    GET  /v2/<name>/_angos/revisions/list          list-revisions
    GET  /v2/<name>/_angos/manifests/<reference>   get-manifest      (ours: one manifest)
    POST /v2/<name>/_angos/warm/<tag>              warm-image        (ours; &platform=)
    GET  /v2/_angos/cache/status                   cache-status      (ours)
    GET  /v2/_angos/jobs/list                      list-jobs         (&n= &after=)
    GET  /v2/_angos/jobs/failed                    list-failed-jobs  (&n= &after=)
    POST /v2/_angos/jobs/failed?key=K              retry-job         (204, or 404)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ...common.errors import BackendUnavailable, NotFound, Unsupported
from ...common.manifests import Descriptor, Platform
from ...common.queue import CacheJob, QueueUnavailable, UnsupportedJobVersion
from ...common.queue.base import DeadLetter, QueuedJob
from ...common.runtime import RUNTIME
from ..access.middleware import ACTION, route_of
from ..actions import (
    CacheStatus,
    ListFailedJobs,
    ListJobs,
    ListNamespaces,
    ListRepositories,
    ListRevisions,
    RetryJob,
    UiConfig,
    ViewManifest,
    WarmImage,
)
from ..pullthrough.warm import WarmFailed, WarmReport, warm
from ..state import FRONTEND
from . import views
from .guard import refuse_cross_site
from .images import ManifestView, Node
from .state import UI

log = logging.getLogger(__name__)

JOBS_PAGE = 100


def rfc3339(timestamp: float | None) -> str | None:
    if not timestamp:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _json(data: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, headers={"Cache-Control": "no-store", **(headers or {})})


async def handle(request: web.Request) -> web.StreamResponse:
    """Every JSON endpoint; the access middleware has decided on the action."""
    action = request[ACTION]
    match action:
        case UiConfig():
            return _json({"name": request.app[UI].settings.name})
        case ListRepositories():
            return _json(repositories_json(await views.repositories(request)))
        case ListNamespaces(repository_key=key):
            page = await views.namespaces(request, key)
            return _json(namespaces_json(page), _next_link(request, page.next_last))
        case ListRevisions(namespace=name):
            return _json(revisions_json(await views.image(request, name)))
        case ViewManifest(namespace=name, reference=reference):
            return _json(manifest_json((await views.manifest(request, name, reference)).view))
        case CacheStatus():
            return _json(cache_json(await views.cache(request)))
        case ListFailedJobs(n=n, after=after):
            letters = await _queue(
                request.app[RUNTIME].queue.dead_letter_page(n or JOBS_PAGE, after)
            )
            return _json(_jobs_page("failed", [dead_letter_json(x) for x in letters], n, letters))
        case ListJobs(n=n, after=after):
            queued = await _queue(request.app[RUNTIME].queue.queued_page(n or JOBS_PAGE, after))
            return _json(_jobs_page("jobs", [queued_json(x) for x in queued], n, queued))
        case RetryJob(key=key):
            refuse_cross_site(request)
            return await retry(request, key)
        case WarmImage():
            refuse_cross_site(request)
            return _json(asdict(await warm_image(request, action)))
    raise NotFound("no such route")


async def _queue(operation: Any) -> Any:
    try:
        return await operation
    except QueueUnavailable as error:
        raise BackendUnavailable(f"the job queue is unavailable: {error}") from error


def _next_link(request: web.Request, last: str | None) -> dict[str, str]:
    if last is None:
        return {}
    query = {k: v for k, v in request.query.items() if k != "last"}
    query["last"] = last
    return {"Link": f'<{request.path}?{urlencode(query)}>; rel="next"'}


def _jobs_page(
    field: str, items: list[dict[str, Any]], n: int | None, page: list[DeadLetter] | list[QueuedJob]
) -> dict[str, Any]:
    data: dict[str, Any] = {field: items}
    if page and len(page) == (n or JOBS_PAGE):
        data["next"] = page[-1].id
    return data


async def retry(request: web.Request, key: str) -> web.Response:
    ui = request.app[UI]
    try:
        job = await _queue(request.app[RUNTIME].queue.retry_dead_letter(key))
    except UnsupportedJobVersion as error:
        raise Unsupported(f"this job cannot run again: {error}") from error
    if job is None:
        raise NotFound("no such failed job", detail={"key": key})
    log.info("dead letter retried from the web UI key=%s digest=%s", key, job.digest)
    ui.catalog.invalidate()
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def warm_image(request: web.Request, action: WarmImage) -> WarmReport:
    frontend = request.app[FRONTEND]
    ui = request.app[UI]
    route = route_of(request)
    platforms = [Platform.parse(text) for text in action.platforms]
    task: asyncio.Task[Any] = asyncio.create_task(
        warm(frontend.manifests, frontend.blobs, route, action.reference, platforms)
    )
    ui.warms.add(task)
    task.add_done_callback(ui.warms.discard)
    try:
        report: WarmReport = await asyncio.shield(task)
    except WarmFailed as error:
        raise BackendUnavailable(str(error)) from error
    finally:
        ui.catalog.invalidate()
    return report


# -- shapes ---------------------------------------------------------------------------------


def repositories_json(view: views.RepositoriesView) -> dict[str, Any]:
    return {
        "repositories": [
            {
                "name": row.settings.name,
                "namespace_count": row.images,
                "tag_count": row.tags,
                "manifest_count": row.manifests,
                "pull_through_cache": True,
                "immutable_tags": row.settings.immutable_tags,
                "upstream_urls": [u.url for u in row.settings.upstreams],
                "namespace": row.settings.namespace,
            }
            for row in view.rows
        ],
        "snapshot_at": rfc3339(view.snapshot_at),
    }


def namespaces_json(view: views.NamespacesView) -> dict[str, Any]:
    repository = view.repository
    data: dict[str, Any] = {
        "repository": repository.name,
        "namespaces": [
            {
                "name": row.image.name,
                "manifest_count": row.image.manifests,
                "upload_count": 0,
                "tag_count": row.image.tags,
                "blob_count": row.image.blobs,
                "size": row.size,
                "last_pulled_at": rfc3339(row.last_pulled_at),
            }
            for row in view.rows
        ],
        "total": view.total,
        "pull_through_cache": True,
        "upstream_urls": [u.url for u in repository.upstreams],
        "immutable_tags": repository.immutable_tags,
        "immutable_tags_exclusions": [p.pattern for p in repository.immutable_tags_exclusions],
        "snapshot_at": rfc3339(view.snapshot_at),
    }
    if view.next_last is not None:
        data["next"] = view.next_last
    return data


def node_json(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = {
        "digest": node.digest,
        "media_type": node.media_type,
        "size": node.size,
        "total_size": node.total_size,
        "tags": list(node.tags),
        "cached": node.cached,
        "pushed_at": rfc3339(node.cached_at),  # Angos's name; for a mirror, when cached
        "last_pulled_at": rfc3339(node.last_pulled_at),
    }
    if node.platform is not None:
        os_name, _, architecture = node.platform.partition("/")
        data["platform"] = {"os": os_name, "architecture": architecture}
    if node.artifact_type is not None:
        data["artifactType"] = node.artifact_type
    if node.children:
        data["children"] = [node_json(child) for child in node.children]
    if node.referrers:
        data["referrers"] = [
            {
                "digest": r.digest,
                "artifactType": r.artifact_type,
                "media_type": r.media_type,
                "annotations": dict(r.annotations),
            }
            for r in node.referrers
        ]
    return data


def revisions_json(page: views.ImagePage) -> dict[str, Any]:
    view = page.view
    return {
        "name": view.name,
        "tags": [
            {"tag": t.tag, "digest": t.digest, "cached_at": rfc3339(t.cached_at)} for t in view.tags
        ],
        "manifests": [node_json(root) for root in view.roots],
        "manifest_count": view.manifest_count,
    }


def _descriptor_json(descriptor: Descriptor, cached: bool | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "media_type": descriptor.media_type,
        "digest": str(descriptor.digest),
        "size": descriptor.size,
    }
    if cached is not None:
        data["cached"] = cached
    if descriptor.annotations:
        data["annotations"] = dict(descriptor.annotations)
    return data


def manifest_json(view: ManifestView) -> dict[str, Any]:
    contents = view.contents
    data: dict[str, Any] = {
        "name": view.name,
        "reference": view.reference,
        **node_json(view.node),
        "annotations": dict(view.annotations),
        "parents": [
            {"digest": p.digest, "tags": list(p.tags), "platform": p.platform} for p in view.parents
        ],
    }
    if contents is not None:
        data["is_index"] = contents.is_index
        if contents.config is not None:
            data["config"] = _descriptor_json(contents.config)
        data["layers"] = [_descriptor_json(layer.descriptor, layer.cached) for layer in view.layers]
        if contents.subject is not None:
            data["subject"] = {**_descriptor_json(contents.subject), "cached": view.subject_cached}
    if view.config is not None:
        data["image_config"] = {**asdict(view.config), "labels": dict(view.config.labels)}
    return data


def cache_json(view: views.CacheView) -> dict[str, Any]:
    def window(w: Any) -> dict[str, Any]:
        return {**asdict(w), "hit_ratio": w.hit_ratio}

    return {
        "process": {
            "pid": view.process_id,
            "started_at": rfc3339(view.started_at),
            "sample_interval_secs": view.interval_secs,
            "note": "counters of this process only; each worker and frontend has its own",
        },
        "last_hour": window(view.hour),
        "last_day": window(view.day),
        "hour_series": [asdict(b) for b in view.hour_series],
        "day_series": [asdict(b) for b in view.day_series],
        "upstreams": [
            {**asdict(u), "last_error_at": rfc3339(u.last_error_at)} for u in view.upstreams
        ],
        "queue": {
            "kind": view.queue.kind,
            "depth": view.queue.depth,
            "dead_letter_count": view.queue.dead_letter_count,
            "error": view.queue.error,
            "caching_degraded": view.queue.caching_degraded,
            "dropped_jobs": view.queue.dropped_jobs,
        },
        "failed": [dead_letter_json(letter) for letter in view.queue.dead_letters],
        "storage": {
            "used_bytes": view.usage.used_bytes,
            "blobs": view.usage.blobs,
            "measured_at": rfc3339(view.usage.measured_at),
            "budget_bytes": view.usage.budget_bytes,
            "note": view.usage.note,
        },
        "downloads_in_flight": view.in_flight,
        "recent_pulls": [{**asdict(p), "at": rfc3339(p.at)} for p in view.pulls],
    }


def _job_json(job: CacheJob | None) -> dict[str, Any]:
    if job is None:
        return {"decodable": False}
    return {
        "decodable": True,
        "kind": str(job.kind),
        "name": job.storage_name,
        "digest": job.digest,
        "tag": job.tag,
        "size": job.size,
        "attempts": job.attempt + 1,
        "enqueued_at": rfc3339(job.enqueued_at),
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "key": letter.id,
        **_job_json(letter.job),
        "reason": letter.reason,
        "failed_at": rfc3339(letter.failed_at),
    }


def queued_json(queued: QueuedJob) -> dict[str, Any]:
    return {"key": queued.id, **_job_json(queued.job)}
