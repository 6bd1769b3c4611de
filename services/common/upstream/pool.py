"""The upstreams of every repository, and trying them in their configured order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

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
from .slots import DownloadSlots
from .targets import AddressPins, TargetGuard

T = TypeVar("T")


class UpstreamPool:
    """One `UpstreamClient` per configured upstream; all share one session and token cache.
    Health (the breaker) and download slots belong to an upstream URL, shared by every
    repository that uses it."""

    def __init__(
        self,
        repositories: Mapping[str, RepositorySettings],
        session: aiohttp.ClientSession,
        metrics: Metrics,
        breaker: GlobalSettings,
        pins: AddressPins,
    ):
        self.tokens = TokenCache()
        self._pins = pins  # shared with the session's connector
        self._session = session
        self._metrics = metrics
        self._health: dict[str, UpstreamHealth] = {}
        self._slots: dict[str, DownloadSlots] = {}
        self.reconfigure(repositories, breaker)

    def reconfigure(
        self, repositories: Mapping[str, RepositorySettings], breaker: GlobalSettings
    ) -> None:
        """New upstreams, URLs or credentials (a live reload) from the next request on; an
        upstream URL that stays keeps its health and download slots. A request in flight
        keeps the client it started with."""
        self._clients = {
            name: [
                self._client(u, self._session, name, self._metrics, breaker) for u in repo.upstreams
            ]
            for name, repo in repositories.items()
        }

    def _client(
        self,
        upstream: UpstreamSettings,
        session: aiohttp.ClientSession,
        repository: str,
        metrics: Metrics,
        breaker: GlobalSettings,
    ) -> UpstreamClient:
        if upstream.url not in self._health:
            self._health[upstream.url] = UpstreamHealth(
                upstream.host,
                breaker.upstream_failure_threshold,
                breaker.upstream_cooldown_secs,
                breaker.upstream_first_cooldown_secs,
            )
            self._slots[upstream.url] = DownloadSlots(
                upstream.host, upstream.max_concurrent_downloads, upstream.connect_timeout_secs
            )
        guard = TargetGuard(
            urlsplit(upstream.url).hostname or "",
            breaker.allowed_redirect_networks,
            upstream.connect_timeout_secs,
            self._pins,
        )
        return UpstreamClient(
            upstream,
            session,
            self.tokens,
            repository,
            metrics,
            self._health[upstream.url],
            self._slots[upstream.url],
            guard,
        )

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
