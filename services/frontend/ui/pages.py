"""The UI's HTML pages, rendered on the server from the same data as the JSON API (`views`).

Jinja2 templates with autoescaping: every value from storage or an upstream (names, tags,
annotations, error text) is escaped where it is written, and the Content-Security-Policy
allows no inline script or style, so a value that slipped through could still not run.
The one script (`static/ui.js`) adds copying, the theme toggle, keyboard navigation and
the action buttons; every page reads fine without it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from ...common.errors import RegistryError
from ...common.oci import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_MANIFEST_LIST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Tag,
)
from ..access.middleware import ACTION
from ..actions import CacheStatus, ListNamespaces, ListRepositories, ListRevisions, ViewManifest
from ..errors import to_registry_error
from . import views
from .state import UI
from .stats import Bucket

TEMPLATES = Path(__file__).resolve().parent / "templates"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NONE = "\u2013"  # an en dash: no value
MEDIA_KINDS = {
    MEDIA_OCI_INDEX: "OCI index",
    MEDIA_OCI_MANIFEST: "OCI manifest",
    MEDIA_DOCKER_MANIFEST_LIST: "Docker manifest list",
    MEDIA_DOCKER_MANIFEST: "Docker manifest",
}


def human_bytes(size: int | float | None) -> str:
    if size is None:
        return NONE
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def short_digest(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}" if encoded else digest


def iso_time(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return NONE
    seconds = max(0.0, (now or time.time()) - timestamp)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} days ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def percent(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio * 100:.1f} %"


def media_kind(media_type: str) -> str:
    return MEDIA_KINDS.get(media_type, media_type.rsplit("/", 1)[-1] or "unknown")


def page_url(name: str, tag: str | None = None, digest: str | None = None) -> str:
    """A UI page: `/<name>`, `/<name>:<tag>` or `/<name>@<digest>` (names, tags and digests
    are validated on their way in, so quoting only guards the separators)."""
    path = "/" + quote(name, safe="/")
    if tag is not None:
        return f"{path}:{quote(tag, safe='')}"
    if digest is not None:
        return f"{path}@{quote(digest, safe=':')}"
    return path


def manifest_api_url(name: str, reference: str) -> str:
    """The registry's own manifest endpoint (the delete button's target)."""
    return f"/v2/{quote(name, safe='/')}/manifests/{quote(reference, safe=':')}"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    low: float  # the lower part: hits, or bytes from the cache
    high: float  # the upper part: misses, or bytes from upstream
    title: str


CHART_WIDTH = 600.0
CHART_HEIGHT = 120.0


def bars(buckets: Sequence[Bucket], kind: str) -> list[Bar]:
    """Stacked bars, scaled to the chart: lookups (hits under misses) or bytes (from the
    cache under from upstream)."""
    if kind == "bytes":
        pairs = [(b.cache_bytes, b.upstream_bytes) for b in buckets]
    else:
        pairs = [(b.hits, b.misses) for b in buckets]
    top = max((low + high for low, high in pairs), default=0) or 1
    width = CHART_WIDTH / max(len(buckets), 1)
    result = []
    for index, ((low, high), bucket) in enumerate(zip(pairs, buckets, strict=True)):
        when = iso_time(bucket.start)
        if kind == "bytes":
            title = f"{when}: {human_bytes(low)} from cache, {human_bytes(high)} from upstream"
        else:
            title = f"{when}: {low} hits, {high} misses"
        result.append(
            Bar(
                x=index * width,
                width=max(width - 1, 1),
                low=low / top * CHART_HEIGHT,
                high=high / top * CHART_HEIGHT,
                title=title,
            )
        )
    return result


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        bytes=human_bytes,
        short=short_digest,
        iso=iso_time,
        ago=ago,
        duration=duration,
        percent=percent,
        kind=media_kind,
    )
    environment.globals.update(
        page_url=page_url,
        manifest_api_url=manifest_api_url,
        bars=bars,
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )
    return environment


ENVIRONMENT = _environment()


def render(
    request: web.Request,
    template: str,
    status: int = 200,
    *,
    section: str,
    title: str,
    crumbs: Sequence[tuple[str, str | None]] = (),
    **context: Any,
) -> web.Response:
    ui = request.app[UI]
    body = ENVIRONMENT.get_template(template).render(
        ui_name=ui.settings.name,
        asset=ui.assets.url,
        section=section,
        title=title,
        crumbs=crumbs,
        now=time.time(),
        **context,
    )
    response = web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )
    response.charset = "utf-8"
    return response


def _image_crumbs(
    request: web.Request, name: str, last: str | None = None
) -> list[tuple[str, str | None]]:
    """Repositories, the configured repository, the image, then `last` (a manifest)."""
    repository = request.app[UI].catalog.router.owner(name)
    crumbs: list[tuple[str, str | None]] = [("Repositories", "/")]
    rest = name
    if repository is not None and name != repository.name:
        crumbs.append((repository.name, page_url(repository.name)))
        rest = name[len(repository.name) + 1 :]
    crumbs.append((rest, page_url(name) if last is not None else None))
    if last is not None:
        crumbs.append((last, None))
    return crumbs


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        return await _page(request)
    except web.HTTPException:
        raise
    except Exception as error:
        failure = to_registry_error(request, error)
        return render(
            request,
            "error.html",
            failure.status,
            section="",
            title=f"{failure.status} {failure.code}",
            error=failure,
        )


async def _page(request: web.Request) -> web.StreamResponse:
    action = request[ACTION]
    match action:
        case ListRepositories():
            view = await views.repositories(request)
            return render(
                request,
                "repositories.html",
                section="repositories",
                title="Repositories",
                view=view,
            )
        case ListNamespaces(repository_key=key):
            page = await views.namespaces(request, key)
            next_url = None
            if page.next_last is not None:
                query = {k: v for k, v in request.query.items() if k != "last"}
                next_url = f"{request.path}?{urlencode({**query, 'last': page.next_last})}"
            return render(
                request,
                "namespaces.html",
                section="repositories",
                title=key,
                crumbs=[("Repositories", "/"), (key, None)],
                view=page,
                next_url=next_url,
            )
        case ListRevisions(namespace=name):
            image = await views.image(request, name)
            return render(
                request,
                "image.html",
                section="repositories",
                title=name.value,
                crumbs=_image_crumbs(request, name.value),
                page=image,
            )
        case ViewManifest(namespace=name, reference=reference):
            manifest = await views.manifest(request, name, reference)
            if isinstance(reference, Tag):
                label, title = reference.value, f"{name.value}:{reference.value}"
            else:
                label = short_digest(str(reference))
                title = f"{name.value}@{label}"
            return render(
                request,
                "manifest.html",
                section="repositories",
                title=title,
                crumbs=_image_crumbs(request, name.value, label),
                page=manifest,
            )
        case CacheStatus():
            cache = await views.cache(request)
            return render(request, "cache.html", section="cache", title="Cache status", view=cache)
    raise RegistryError("no such page")
