"""Listings: a repository's tags and the catalog, paged with `n` and `last`."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web

from ..common.errors import NameUnknown, PaginationInvalid
from ..common.oci import TAG_RE, RepositoryName, Tag
from ..common.routing import Route
from ..common.runtime import RUNTIME
from .access.middleware import ACCESS, IDENTITY
from .actions import MAX_PAGE_SIZE, GetManifest, ListTags
from .state import FRONTEND

# A catalog request without `n` gets this many names and a Link to the next page.
CATALOG_PAGE_SIZE = 1000


def _page_size(request: web.Request) -> int | None:
    """The `n` of the query, checked; None when absent."""
    n_text = request.query.get("n")
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
    return n


def _page(request: web.Request, items: list[str]) -> tuple[list[str], str | None]:
    """Apply `n` and `last`; return the page and the query string of the next page."""
    n = _page_size(request)
    last = request.query.get("last")
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
    n = _page_size(request)
    answer = await request.app[FRONTEND].tags.list(route, n, request.query.get("last"))
    # Only the tags this identity may pull (rules may look at request.reference).
    access, identity = request.app[ACCESS], request[IDENTITY]
    tags = [
        tag
        for tag in answer.tags
        if TAG_RE.match(tag)
        and access.verdict(identity, GetManifest(name, Tag(tag)), route).allowed
    ]
    path = f"/v2/{quote(name.value)}/tags/list"
    upstream = answer.upstream_page
    if upstream is not None and upstream.next_last is not None:
        # The upstream paged it: its next page, under this registry's name for it.
        page = tags
        next_query = urlencode({"n": upstream.next_n or n or len(tags), "last": upstream.next_last})
    elif upstream is not None and n is None and not request.query.get("last"):
        page, next_query = tags, None  # the upstream's whole list, in its order
    else:
        # The cached tags, or an upstream that ignores `n` and `last` (Distribution 2.8):
        # paged here, in lexical order.
        if not tags and upstream is None:
            raise NameUnknown("no tags of this repository are cached", detail={"name": name.value})
        page, next_query = _page(request, sorted(tags))
    headers = _link(path, next_query)
    if answer.warning:
        headers["Warning"] = answer.warning
    return web.json_response({"name": name.value, "tags": page}, headers=headers)


async def catalog(request: web.Request) -> web.Response:
    """One page of names, read from storage only as far as the page needs (never a walk of
    the whole tree per request), in path order; `last` resumes after a name."""
    runtime = request.app[RUNTIME]
    access, identity = request.app[ACCESS], request[IDENTITY]
    n = _page_size(request)
    size = CATALOG_PAGE_SIZE if n is None else n
    names: list[str] = []
    more = False
    async for name in runtime.storage.repositories_after(request.query.get("last") or None):
        repository = runtime.router.owner(name)
        if repository is None:
            continue
        route = runtime.router.route_for(repository.name, name[len(repository.name) + 1 :])
        # Only the repositories whose tags this identity may list.
        if not access.verdict(identity, ListTags(RepositoryName(name)), route).allowed:
            continue
        if len(names) == size:
            more = True
            break
        names.append(name)
    next_query = urlencode({"n": size, "last": names[-1]}) if more and names else None
    return web.json_response({"repositories": names}, headers=_link("/v2/_catalog", next_query))
