"""Recent pulls: the manifests this process answered lately, in a bounded ring.

Recorded when a manifest GET's response is about to be sent (from the UI's
`on_response_prepare` signal, a few attribute reads per response), so the pull path itself
is untouched. Per
process, lost at restart: it answers "who pulled what just now", not history.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from ...common.oci import Reference
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


# What a pull leaves in the ring: at, name, reference, digest, media type, stale, client.
_Entry = tuple[float, str, Reference, str, str, bool, str]


class RecentPulls:
    """The ring holds plain tuples (a pull costs a few microseconds); they become `Pull`
    values only when a page reads them."""

    def __init__(self, keep: int = KEEP_PULLS, keep_names: int = KEEP_NAMES):
        self._pulls: deque[_Entry] = deque(maxlen=keep)
        self._last: dict[str, float] = {}
        self._keep_names = keep_names

    def _remember(self, entry: _Entry) -> None:
        self._pulls.append(entry)
        at, name, digest = entry[0], entry[1], entry[3]
        last = self._last
        last[name] = at
        last[f"{name}@{digest}"] = at
        if len(last) > 2 * self._keep_names:
            # Now and then, not per pull: keep the names pulled most recently.
            newest = sorted(last.items(), key=lambda item: item[1])[-self._keep_names :]
            self._last = dict(newest)

    def latest(self, count: int = 50) -> list[Pull]:
        """Newest first."""
        entries = list(self._pulls)[-count:]
        return [
            Pull(at, name, str(reference), digest, media_type, stale, client[:USER_AGENT_CHARS])
            for at, name, reference, digest, media_type, stale, client in reversed(entries)
        ]

    def last_pulled(self, key: str) -> float | None:
        """When this process last answered a pull of an image (`name`) or of one of its
        manifests (`name@digest`)."""
        return self._last.get(key)

    def note(self, request: web.Request, response: web.StreamResponse) -> None:
        """A GET's response is about to be sent: remember it when it answers a pull."""
        if response.status != 200:
            return
        action = request.get(ACTION)
        # Exactly a pull: the UI's own manifest page is a subclass, and not one.
        if type(action) is not GetManifest:
            return
        route = request.get(ROUTE)
        headers = response.headers
        self._remember(
            (
                time.time(),
                # One name per image, however the client addressed it.
                route.storage_name if isinstance(route, Route) else action.namespace.value,
                action.reference,
                headers.get("Docker-Content-Digest", ""),
                headers.get("Content-Type", ""),
                "Warning" in headers,
                request.headers.get("User-Agent", ""),
            )
        )
