"""The upstreams of every repository, and trying them in their configured order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp

from ..config import RepositorySettings, UpstreamSettings
from ..metrics import Metrics
from .auth import TokenCache
from .client import (
    UpstreamClient,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from .health import UpstreamHealth

T = TypeVar("T")


class UpstreamPool:
    """One `UpstreamClient` per configured upstream; all share one session and token cache."""

    def __init__(
        self,
        repositories: Mapping[str, RepositorySettings],
        session: aiohttp.ClientSession,
        metrics: Metrics,
        breaker: tuple[int, float] = (3, 30.0),
    ):
        self.tokens = TokenCache()
        self._health: dict[str, UpstreamHealth] = {}
        self._clients = {
            name: [
                UpstreamClient(u, session, self.tokens, name, metrics, self._health_of(u, breaker))
                for u in repo.upstreams
            ]
            for name, repo in repositories.items()
        }

    def _health_of(self, upstream: UpstreamSettings, breaker: tuple[int, float]) -> UpstreamHealth:
        # One health record per upstream URL, shared by every repository that uses it.
        if upstream.url not in self._health:
            self._health[upstream.url] = UpstreamHealth(upstream.host, *breaker)
        return self._health[upstream.url]

    def clients(self, repository: str) -> list[UpstreamClient]:
        return self._clients.get(repository, [])


async def first_answer(
    clients: list[UpstreamClient], operation: Callable[[UpstreamClient], Awaitable[T]]
) -> T:
    """Run `operation` against each upstream in order until one answers.

    A 404 moves on too (a later upstream may have it). When none answers, the most telling
    error is raised: not-found only if every upstream said so, else rate-limited, denied,
    then unavailable.
    """
    errors: list[UpstreamError] = []
    for client in clients:
        try:
            return await operation(client)
        except UpstreamError as error:
            errors.append(error)
    if not errors:
        raise UpstreamUnavailable("-", "no upstream configured")
    if all(isinstance(e, UpstreamNotFound) for e in errors):
        raise errors[0]
    for kind in (UpstreamRateLimited, UpstreamDenied, UpstreamUnavailable):
        for failure in errors:
            if isinstance(failure, kind):
                raise failure
    raise errors[-1]
