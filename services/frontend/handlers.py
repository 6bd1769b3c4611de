"""HTTP handlers: a request becomes an action, the access policy decides, the pull-through
services answer with values, and those become responses here."""

from __future__ import annotations

from aiohttp import web

from ..common.errors import BackendUnavailable, NotFound
from ..common.oci import MEDIA_OCI_INDEX, Digest, Tag
from ..common.routing import Route
from .access.middleware import ACTION, route_of
from .actions import ApiBase, Catalog, DeleteManifest, GetBlob, GetManifest, ListTags, Referrers
from .lifecycle import LIFECYCLE
from .listing import catalog, tags_list
from .pullthrough.answers import SpooledBlob, StoredBlob, UpstreamBlobHead
from .pullthrough.manifests import ManifestVanished
from .responses import (
    BlobVanished,
    blob_headers,
    etag_matches,
    not_modified,
    requested_range,
    send_spool,
    stored_blob_response,
)
from .sent import sent_of
from .state import FRONTEND


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The access middleware parsed the action and allowed it; answer it."""
    action = request[ACTION]
    match action:
        case ApiBase():
            return web.json_response({})
        case Catalog():
            return await catalog(request)
        case GetManifest(reference=reference):
            return await manifest(request, route_of(request), reference)
        case GetBlob(digest=digest):
            return await blob(request, route_of(request), digest)
        case DeleteManifest(reference=reference):
            await request.app[LIFECYCLE].deletes.delete(route_of(request), reference)
            return web.Response(status=202)
        case ListTags(namespace=name):
            return await tags_list(request, name, route_of(request))
        case Referrers(digest=digest, artifact_type=artifact_type):
            return await referrers(request, route_of(request), digest, artifact_type)
        case _:
            raise NotFound("no such route")


async def manifest(
    request: web.Request, route: Route, reference: Tag | Digest
) -> web.StreamResponse:
    manifests = request.app[FRONTEND].manifests
    # Docker and containers/image send one Accept header per media type: read them all.
    accept = ", ".join(request.headers.getall("Accept", ())) or None
    answer = await manifests.get(route, reference, accept)
    body: bytes | None = None
    if request.method == "GET" and not etag_matches(request, answer.digest):
        try:
            body = await manifests.read_bytes(answer)
        except ManifestVanished:  # deleted since its lookup (a prune): a miss on a new look
            answer = await manifests.get(route, reference, accept)
            body = await manifests.read_bytes(answer)
    pulls = request.app[LIFECYCLE].pulls
    if pulls is not None:
        pulls.record(route.storage_name, reference)
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
        return not_modified(answer.digest)
    if request.method == "HEAD":
        headers["Content-Length"] = str(answer.size)
        return web.Response(status=200, headers=headers)
    assert body is not None  # a GET not answered 304 read it above
    response = web.Response(status=200, body=body, headers=headers)
    response.content_type = answer.media_type
    return response


async def referrers(
    request: web.Request, route: Route, digest: Digest, artifact_type: str | None
) -> web.Response:
    answer = await request.app[FRONTEND].referrers.get(route, digest, artifact_type)
    # Exactly this type, no charset: the conformance suite compares it whole.
    headers = {"Content-Type": MEDIA_OCI_INDEX}
    if answer.filtered:
        headers["OCI-Filters-Applied"] = "artifactType"
    if answer.warning:
        headers["Warning"] = answer.warning
    return web.Response(status=200, body=answer.body, headers=headers)


async def blob(request: web.Request, route: Route, digest: Digest) -> web.StreamResponse:
    frontend = request.app[FRONTEND]
    metrics = frontend.runtime.metrics
    # A spool handed to the cacher may be committed (and gone) before this client opens it:
    # then it is a hit on the next look.
    for _ in range(3):
        answer = await frontend.blobs.get(route, digest, head=request.method == "HEAD")
        match answer:
            case StoredBlob():
                try:
                    response = await stored_blob_response(request, answer)
                except BlobVanished:
                    continue  # deleted since the lookup: a miss on the next look
                metrics.bytes_served.labels("cache").inc(sent_of(request).body)
                return response
            case UpstreamBlobHead(size=size):
                headers = blob_headers(digest)
                if size is not None:
                    headers["Content-Length"] = str(size)
                return web.Response(status=200, headers=headers)
            case SpooledBlob(spool=spool):
                # A Range on a cold blob is served from the spool as it arrives, where the
                # size is known (else the whole blob: a server may ignore a Range).
                window = None
                if spool.size is not None:
                    window = requested_range(request, digest, spool.size)
                response = web.StreamResponse(
                    status=206 if window else 200, headers=blob_headers(digest)
                )
                if window is not None and spool.size is not None:
                    response.content_length = window.length
                    response.headers["Content-Range"] = window.content_range(spool.size)
                elif spool.size is not None:
                    response.content_length = spool.size
                metrics.streams_in_flight.inc()
                try:
                    await send_spool(request, response, spool, window)
                finally:
                    metrics.streams_in_flight.dec()
                if not response.prepared:
                    continue  # the spool was handed to the cacher and committed: a hit now
                metrics.bytes_served.labels("upstream").inc(sent_of(request).body)
                return response
    raise BackendUnavailable("the blob moved between spool and storage; retry the request")
