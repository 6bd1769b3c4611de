"""HTTP handlers: turn a request into an action, check the access policy, answer."""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlencode

from aiohttp import web

from ..common.errors import Denied, NameUnknown, PaginationInvalid
from ..common.metrics import CONTENT_TYPE_LATEST
from ..common.oci import Digest, RepositoryName, Tag
from ..common.routing import Route
from ..common.runtime import RUNTIME
from .actions import ApiBase, Catalog, GetBlob, GetManifest, ListTags, Referrers, parse_action
from .blobs import BlobService, etag_matches
from .middlewares import ROUTE_LABEL
from .pull import PullThrough

PULL = web.AppKey("pull", PullThrough)
BLOBS = web.AppKey("blobs", BlobService)

MAX_PAGE_SIZE = 10_000


def _route(request: web.Request, name: RepositoryName) -> Route:
    route = request.app[RUNTIME].router.resolve(name, request.query.get("ns"))
    if not route.repository.access_policy.default_allow:
        raise Denied("access denied by the registry's access policy", detail={"name": name.value})
    return route


async def dispatch(request: web.Request) -> web.StreamResponse:
    action = parse_action(request.method, request.match_info.get("tail", ""))
    request[ROUTE_LABEL] = action.route_label
    match action:
        case ApiBase():
            return web.json_response({})
        case Catalog():
            return await catalog(request)
        case GetManifest(name=name, reference=reference):
            return await manifest(request, _route(request, name), reference)
        case GetBlob(name=name, digest=digest):
            return await request.app[BLOBS].serve(request, _route(request, name), digest)
        case ListTags(name=name):
            return await tags_list(request, name, _route(request, name))
        case Referrers(name=name):
            _route(request, name)
            # A mirror has no referrers index of its own: an empty index, as the spec allows.
            return web.json_response(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [],
                },
                content_type="application/vnd.oci.image.index.v1+json",
            )


async def manifest(
    request: web.Request, route: Route, reference: Tag | Digest
) -> web.StreamResponse:
    pull = request.app[PULL]
    # Docker and containers/image send one Accept header per media type: read them all.
    accept = ", ".join(request.headers.getall("Accept", ())) or None
    answer = await pull.manifest(route, reference, accept)
    headers = {
        "Docker-Content-Digest": answer.digest,
        "Content-Type": answer.media_type,
        "ETag": f'"{answer.digest}"',
    }
    if answer.warning:
        headers["Warning"] = answer.warning
    # Echo the namespace we routed by, never the raw query value (it may hold anything).
    namespace = route.repository.namespace
    if namespace is not None and request.query.get("ns", "").lower() == namespace:
        headers["OCI-Namespace"] = namespace
    if etag_matches(request, answer.digest):
        return web.Response(status=304, headers={"ETag": headers["ETag"]})
    if request.method == "HEAD":
        headers["Content-Length"] = str(answer.size)
        return web.Response(status=200, headers=headers)
    body = await pull.read_manifest_bytes(answer)
    response = web.Response(status=200, body=body, headers=headers)
    response.content_type = answer.media_type
    return response


def _page(request: web.Request, items: list[str]) -> tuple[list[str], str | None]:
    """Apply `n` and `last`; return the page and the query string of the next page."""
    n_text = request.query.get("n")
    last = request.query.get("last")
    n: int | None = None
    if n_text is not None:
        # isdigit() admits "²" and int() refuses 5,000 digits: ASCII and short first.
        digits = n_text.lstrip("0") or "0"
        if (
            not (n_text.isascii() and n_text.isdigit())
            or len(digits) > len(str(MAX_PAGE_SIZE))
            or int(digits) > MAX_PAGE_SIZE
        ):
            raise PaginationInvalid(
                f"n must be an integer from 0 to {MAX_PAGE_SIZE}", detail={"n": n_text[:50]}
            )
        n = int(digits)
    if last:
        items = [item for item in items if item > last]
    if n is None or len(items) <= n:
        return items, None
    page = items[:n]
    if not page:
        return page, None
    return page, urlencode({"n": n, "last": page[-1]})


def _link(path: str, query: str | None) -> dict[str, str]:
    return {"Link": f'<{path}?{query}>; rel="next"'} if query else {}


async def tags_list(request: web.Request, name: RepositoryName, route: Route) -> web.Response:
    tags = await request.app[RUNTIME].storage.list_tags(route.storage_name)
    if not tags:
        raise NameUnknown("no tags of this repository are cached", detail={"name": name.value})
    page, next_query = _page(request, tags)
    return web.json_response(
        {"name": name.value, "tags": page},
        headers=_link(f"/v2/{quote(name.value)}/tags/list", next_query),
    )


async def catalog(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    names = []
    for name in await runtime.storage.list_repositories():
        repository = runtime.router.repository(name.split("/", 1)[0])
        if repository is not None and repository.access_policy.default_allow:
            names.append(name)
    page, next_query = _page(request, names)
    return web.json_response({"repositories": page}, headers=_link("/v2/_catalog", next_query))


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        depth = await asyncio.wait_for(runtime.queue.depth(), timeout=1.0)
        runtime.metrics.queue_depth.set(depth)
    except Exception:  # the queue being down is reported by registry_caching_degraded
        pass
    return web.Response(
        body=runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks: dict[str, str] = {}
    ready = True
    try:
        await asyncio.wait_for(runtime.storage.objects.ping(), 5.0)
        checks["storage"] = "ok"
    except Exception as error:
        checks["storage"] = f"unavailable: {error}"
        ready = False
    try:
        await asyncio.wait_for(runtime.queue.ping(), 2.0)
        checks["queue"] = "ok"
    except Exception as error:
        # Caching is degraded, pulls still work: still ready.
        checks["queue"] = f"degraded: {error}"
    if checks["queue"] == "ok":
        request.app[PULL].jobs.queue_reachable()
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
