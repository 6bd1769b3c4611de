"""The upstreams of every repository, and trying them in their configured order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp

from ..config import RepositorySettings
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

T = TypeVar("T")


class UpstreamPool:
    """One `UpstreamClient` per configured upstream; all share one session and token cache."""

    def __init__(
        self,
        repositories: Mapping[str, RepositorySettings],
        session: aiohttp.ClientSession,
        metrics: Metrics,
    ):
        self.tokens = TokenCache()
        self._clients = {
            name: [UpstreamClient(u, session, self.tokens, name, metrics) for u in repo.upstreams]
            for name, repo in repositories.items()
        }

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
        for error in errors:
            if isinstance(error, kind):
                raise error
    raise errors[-1]
