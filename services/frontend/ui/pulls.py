"""Recent pulls: the manifests this process answered lately, in a bounded ring.

Recorded when a manifest GET's response is about to be sent (an `on_response_prepare`
signal, a few attribute reads per response), so the pull path itself is untouched. Per
process, lost at restart: it answers "who pulled what just now", not history.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from aiohttp import web

from ...common.routing import Route
from ..access.middleware import ACTION, ROUTE
from ..actions import GetManifest

KEEP_PULLS = 200
KEEP_NAMES = 10_000
USER_AGENT_CHARS = 120


@dataclass(frozen=True, slots=True)
class Pull:
    at: float
    name: str
    reference: str
    digest: str
    media_type: str
    stale: bool  # answered from the cache with the upstream unreachable
    client: str  # the User-Agent, shortened


class RecentPulls:
    def __init__(self, keep: int = KEEP_PULLS, keep_names: int = KEEP_NAMES):
        self._pulls: deque[Pull] = deque(maxlen=keep)
        self._last: OrderedDict[str, float] = OrderedDict()
        self._keep_names = keep_names

    def record(self, pull: Pull) -> None:
        self._pulls.append(pull)
        for key in (pull.name, f"{pull.name}@{pull.digest}"):
            self._last[key] = pull.at
            self._last.move_to_end(key)
        while len(self._last) > self._keep_names:
            self._last.popitem(last=False)

    def latest(self, count: int = 50) -> list[Pull]:
        """Newest first."""
        return list(reversed(self._pulls))[:count]

    def last_pulled(self, key: str) -> float | None:
        """When this process last answered a pull of an image (`name`) or of one of its
        manifests (`name@digest`)."""
        return self._last.get(key)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if response.status != 200 or request.method != "GET":
            return
        action = request.get(ACTION)
        # Exactly a pull: the UI's own manifest page is a subclass, and not one.
        if type(action) is not GetManifest:
            return
        route = request.get(ROUTE)
        self.record(
            Pull(
                at=time.time(),
                # One name per image, however the client addressed it.
                name=route.storage_name if isinstance(route, Route) else action.namespace.value,
                reference=str(action.reference),
                digest=response.headers.get("Docker-Content-Digest", ""),
                media_type=response.headers.get("Content-Type", ""),
                stale="Warning" in response.headers,
                client=request.headers.get("User-Agent", "")[:USER_AGENT_CHARS],
            )
        )
