"""Do we ask the upstream? The one decision, pure: no I/O, no clock of its own.

Given what is cached for a reference, the repository's rules, the client's Accept and
whether the upstream takes requests now, `decide` says what to do:

| what is cached                         | upstream up       | upstream down     |
|----------------------------------------|-------------------|-------------------|
| nothing                                | FETCH             | FAIL              |
| a type only the upstream can convert   | FETCH (negotiate) | FAIL              |
| not confirmed for this name            | REVALIDATE        | FAIL              |
| immutable (digest, immutable tag)      | SERVE_CACHE       | SERVE_CACHE       |
| mutable, checked within the interval   | SERVE_CACHE       | SERVE_CACHE       |
| mutable, not checked recently          | REVALIDATE        | SERVE_STALE       |

"Not confirmed for this name" is a blob stored through another repository: it is served
under this name only once this name's upstream confirms it has it, and never when that
upstream cannot say (a private upstream's blob must not leak through another name).

A client that does not accept the cached type is answered from the cache too where
`negotiate` can (an index it cannot take is a 404, a list gives its linux/amd64 child);
only a conversion the upstream makes (schema 2 to schema 1) sends it there.

When a REVALIDATE or FETCH then fails because the upstream is unavailable, the caller asks
again with `upstream_up=False`: that is where stale serving comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .negotiate import Negotiated, negotiate

# A tag fetched moments ago and still on its way to storage answers without a second
# upstream request for this long (the cache job usually lands well within it).
IN_TRANSIT_SECS = 10.0


class Freshness(StrEnum):
    SERVE_CACHE = "serve-cache"
    REVALIDATE = "revalidate"
    FETCH = "fetch"
    SERVE_STALE = "serve-stale"
    FAIL = "fail"


class Reason(StrEnum):
    NOT_CACHED = "not-cached"
    NOT_ACCEPTABLE = "not-acceptable"
    UNCONFIRMED = "unconfirmed"
    IMMUTABLE = "immutable"
    CHECKED_RECENTLY = "checked-recently"
    DUE_FOR_CHECK = "due-for-check"


@dataclass(frozen=True, slots=True)
class CachedView:
    """What the cache holds for one reference under one name."""

    digest: str
    media_type: str | None  # None for blobs
    # Unix time the upstream last confirmed it for this name; None: never for this name.
    checked_at: float | None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Freshness
    reason: Reason

    @property
    def asks_upstream(self) -> bool:
        return self.action in (Freshness.REVALIDATE, Freshness.FETCH)


def decide(
    cached: CachedView | None,
    *,
    immutable: bool,
    check_interval_secs: float,
    accept: str | None,
    upstream_up: bool,
    now: float,
) -> Decision:
    if cached is None:
        return _ask(Freshness.FETCH, Reason.NOT_CACHED, upstream_up)
    if cached.media_type is not None and negotiate(cached.media_type, accept) is (
        Negotiated.ASK_UPSTREAM
    ):
        return _ask(Freshness.FETCH, Reason.NOT_ACCEPTABLE, upstream_up)
    if cached.checked_at is None:
        return _ask(Freshness.REVALIDATE, Reason.UNCONFIRMED, upstream_up)
    if immutable:
        return Decision(Freshness.SERVE_CACHE, Reason.IMMUTABLE)
    if check_interval_secs > 0 and now - cached.checked_at < check_interval_secs:
        return Decision(Freshness.SERVE_CACHE, Reason.CHECKED_RECENTLY)
    if upstream_up:
        return Decision(Freshness.REVALIDATE, Reason.DUE_FOR_CHECK)
    return Decision(Freshness.SERVE_STALE, Reason.DUE_FOR_CHECK)


def _ask(action: Freshness, reason: Reason, upstream_up: bool) -> Decision:
    return Decision(action if upstream_up else Freshness.FAIL, reason)
