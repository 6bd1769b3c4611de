"""Tag lists for two kinds of users: the cached tags (Angos's pull-through behaviour, the
default `tag_list = "cache"`), or the upstream's list (`"upstream"`, as Distribution's proxy
gives it to `skopeo sync`, `crane ls`, `regctl tag ls` and updaters).

A tag that was just served is listed at once in either mode, before its cache job lands
(the frontends share it through the queue's recent-tags set). When the upstream fails, the
cached tags answer with a `Warning`; only when neither knows the repository is it unknown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ...common.errors import NameUnknown
from ...common.queue import JobQueue, QueueUnavailable
from ...common.routing import Route
from ...common.storage import RegistryStorage
from ...common.upstream import UpstreamError, UpstreamNotFound
from ...common.upstream.pool import UpstreamPool, first_answer
from .answers import STALE_WARNING, Subject, UpstreamFailure

log = logging.getLogger(__name__)

RECENT_LOOKUP_SECS = 1.0
MAX_TAG_LIST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TagsAnswer:
    tags: list[str]
    # The upstream paged it (its next page, if any); None: the whole cached list, to page.
    upstream_page: UpstreamPage | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamPage:
    tags: list[str]
    next_last: str | None  # where the upstream's next page starts (from its Link)
    next_n: int | None


class TagLister:
    def __init__(self, storage: RegistryStorage, upstreams: UpstreamPool, queue: JobQueue):
        self.storage = storage
        self.upstreams = upstreams
        self.queue = queue

    async def cached(self, route: Route) -> list[str]:
        """Stored tags and the ones just served, sorted."""
        tags = set(await self.storage.list_tags(route.storage_name))
        try:
            tags |= await asyncio.wait_for(
                self.queue.recent_tags(route.storage_name), RECENT_LOOKUP_SECS
            )
        except (QueueUnavailable, TimeoutError) as error:
            log.debug("recent tags unavailable: %s", error)
        return sorted(tags)

    async def upstream(self, route: Route, n: int | None, last: str | None) -> UpstreamPage:
        fetched = await first_answer(
            self.upstreams.clients(route.repository.name),
            lambda client: client.list_tags(
                route.upstream_name(client.settings), n, last, MAX_TAG_LIST_BYTES
            ),
        )
        try:
            document = json.loads(fetched.data)
            tags = [tag for tag in document.get("tags") or [] if isinstance(tag, str)]
        except (ValueError, AttributeError):
            tags = []
        next_last, next_n = _next_page(fetched.link)
        return UpstreamPage(tags, next_last, next_n)

    async def list(self, route: Route, n: int | None, last: str | None) -> TagsAnswer:
        if route.repository.tag_list == "cache":
            return TagsAnswer(await self.cached(route))
        try:
            page = await self.upstream(route, n, last)
        except UpstreamError as error:
            cached = await self.cached(route)
            if not cached:
                if isinstance(error, UpstreamNotFound):
                    raise NameUnknown(
                        "repository name not known to registry", detail={"name": route.storage_name}
                    ) from error
                raise UpstreamFailure(
                    error, Subject.MANIFEST, {"name": route.storage_name}
                ) from error
            log.warning("tag list from the cache name=%s reason=%s", route.storage_name, error)
            return TagsAnswer(cached, warning=STALE_WARNING)
        return TagsAnswer(page.tags, upstream_page=page)


def _next_page(link: str | None) -> tuple[str | None, int | None]:
    """`last` and `n` of a `Link: </v2/x/tags/list?n=2&last=b>; rel="next"` header."""
    if not link or 'rel="next"' not in link:
        return None, None
    target = link.split(";", 1)[0].strip().strip("<>")
    query = parse_qs(urlsplit(target).query)
    last = query.get("last", [None])[0]
    n_text = query.get("n", [None])[0]
    n = int(n_text) if n_text and n_text.isdigit() else None
    return last, n
