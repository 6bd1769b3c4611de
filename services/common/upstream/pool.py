"""The upstreams of every repository, and trying them in their configured order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp

from ..config import GlobalSettings, RepositorySettings, UpstreamSettings
from ..metrics import Metrics
from .auth import TokenCache
from .client import UpstreamClient, refused_error
from .errors import (
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
        breaker: GlobalSettings,
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

    def _health_of(self, upstream: UpstreamSettings, breaker: GlobalSettings) -> UpstreamHealth:
        # One health record per upstream URL, shared by every repository that uses it.
        if upstream.url not in self._health:
            self._health[upstream.url] = UpstreamHealth(
                upstream.host, breaker.upstream_failure_threshold, breaker.upstream_cooldown_secs
            )
        return self._health[upstream.url]

    def clients(self, repository: str) -> list[UpstreamClient]:
        return self._clients.get(repository, [])

    def accepting(self, repository: str) -> bool:
        """Would any upstream of `repository` take a request now (breaker, rate limit)?"""
        return any(client.health.accepting() for client in self.clients(repository))

    def refusal(self, repository: str) -> UpstreamError:
        """The error a request to `repository`'s upstreams would meet now (none accepting)."""
        errors: list[UpstreamError] = []
        for client in self.clients(repository):
            refused = client.health.refusal()
            if refused is not None:
                errors.append(refused_error(client.host, refused))
        return most_telling(errors)


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
    raise most_telling(errors)


def most_telling(errors: list[UpstreamError]) -> UpstreamError:
    """Not-found only if every upstream said so, else rate-limited, denied, unavailable."""
    if not errors:
        return UpstreamUnavailable("-", "no upstream configured")
    if all(isinstance(e, UpstreamNotFound) for e in errors):
        return errors[0]
    for kind in (UpstreamRateLimited, UpstreamDenied, UpstreamUnavailable):
        for failure in errors:
            if isinstance(failure, kind):
                return failure
    return errors[-1]
