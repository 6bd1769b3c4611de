"""Listings: a repository's tags and the catalog, paged with `n` and `last`."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web

from ..common.errors import NameUnknown, PaginationInvalid
from ..common.oci import RepositoryName, Tag
from ..common.routing import Route
from ..common.runtime import RUNTIME
from .access.middleware import ACCESS, IDENTITY
from .actions import MAX_PAGE_SIZE, GetManifest, ListTags


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
    # Only the tags this identity may pull (rules may look at request.reference).
    access, identity = request.app[ACCESS], request[IDENTITY]
    tags = [
        tag
        for tag in tags
        if access.verdict(identity, GetManifest(name, Tag(tag)), route).allowed
    ]
    if not tags:
        raise NameUnknown("no tags of this repository are cached", detail={"name": name.value})
    page, next_query = _page(request, tags)
    return web.json_response(
        {"name": name.value, "tags": page},
        headers=_link(f"/v2/{quote(name.value)}/tags/list", next_query),
    )


async def catalog(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    access, identity = request.app[ACCESS], request[IDENTITY]
    names = []
    for name in await runtime.storage.list_repositories():
        repository = runtime.router.owner(name)
        if repository is None:
            continue
        route = runtime.router.route_for(repository.name, name[len(repository.name) + 1 :])
        # Only the repositories whose tags this identity may list.
        if access.verdict(identity, ListTags(RepositoryName(name)), route).allowed:
            names.append(name)
    page, next_query = _page(request, names)
    return web.json_response({"repositories": page}, headers=_link("/v2/_catalog", next_query))
