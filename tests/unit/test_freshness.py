"""The one decision "do we ask the upstream?", row by row, without a network."""

from __future__ import annotations

import pytest
from simple_registry.common.oci import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_MANIFEST_V1_SIGNED,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)
from simple_registry.frontend.pullthrough.freshness import (
    CachedView,
    Freshness,
    Reason,
    decide,
)

NOW = 1_000_000.0
INDEX = CachedView("sha256:" + "a" * 64, MEDIA_OCI_INDEX, checked_at=NOW - 100)
SCHEMA2 = CachedView("sha256:" + "d" * 64, MEDIA_DOCKER_MANIFEST, checked_at=NOW - 100)
BLOB_LINKED = CachedView("sha256:" + "b" * 64, None, checked_at=0.0)
BLOB_UNCONFIRMED = CachedView("sha256:" + "b" * 64, None, checked_at=None)
ONLY_IMAGE_MANIFESTS = MEDIA_OCI_MANIFEST
SCHEMA1_ONLY = MEDIA_DOCKER_MANIFEST_V1_SIGNED


@pytest.mark.parametrize(
    ("cached", "immutable", "interval", "accept", "upstream_up", "action", "reason"),
    [
        # nothing cached
        (None, False, 0, None, True, Freshness.FETCH, Reason.NOT_CACHED),
        (None, False, 0, None, False, Freshness.FAIL, Reason.NOT_CACHED),
        (None, True, 0, None, True, Freshness.FETCH, Reason.NOT_CACHED),
        # cached, but a type only the upstream converts for this client (schema 1)
        (SCHEMA2, True, 0, SCHEMA1_ONLY, True, Freshness.FETCH, Reason.NOT_ACCEPTABLE),
        (SCHEMA2, True, 0, SCHEMA1_ONLY, False, Freshness.FAIL, Reason.NOT_ACCEPTABLE),
        # a type the client does not take but the cache can answer (404 for an index)
        (INDEX, True, 0, ONLY_IMAGE_MANIFESTS, False, Freshness.SERVE_CACHE, Reason.IMMUTABLE),
        # stored through another name, not confirmed for this one
        (BLOB_UNCONFIRMED, True, 0, None, True, Freshness.REVALIDATE, Reason.UNCONFIRMED),
        (BLOB_UNCONFIRMED, True, 0, None, False, Freshness.FAIL, Reason.UNCONFIRMED),
        # immutable: a digest, a linked blob, an immutable tag
        (BLOB_LINKED, True, 0, None, True, Freshness.SERVE_CACHE, Reason.IMMUTABLE),
        (BLOB_LINKED, True, 0, None, False, Freshness.SERVE_CACHE, Reason.IMMUTABLE),
        (INDEX, True, 0, None, True, Freshness.SERVE_CACHE, Reason.IMMUTABLE),
        (INDEX, True, 0, MEDIA_OCI_INDEX, False, Freshness.SERVE_CACHE, Reason.IMMUTABLE),
        # mutable, checked within the interval
        (INDEX, False, 300, None, True, Freshness.SERVE_CACHE, Reason.CHECKED_RECENTLY),
        (INDEX, False, 300, None, False, Freshness.SERVE_CACHE, Reason.CHECKED_RECENTLY),
        # mutable, due for a check (interval passed, or no interval)
        (INDEX, False, 60, None, True, Freshness.REVALIDATE, Reason.DUE_FOR_CHECK),
        (INDEX, False, 0, None, True, Freshness.REVALIDATE, Reason.DUE_FOR_CHECK),
        (INDEX, False, 0, None, False, Freshness.SERVE_STALE, Reason.DUE_FOR_CHECK),
        (INDEX, False, 60, "*/*", False, Freshness.SERVE_STALE, Reason.DUE_FOR_CHECK),
    ],
)
def test_the_decision_table(
    cached: CachedView | None,
    immutable: bool,
    interval: float,
    accept: str | None,
    upstream_up: bool,
    action: Freshness,
    reason: Reason,
) -> None:
    decision = decide(
        cached,
        immutable=immutable,
        check_interval_secs=interval,
        accept=accept,
        upstream_up=upstream_up,
        now=NOW,
    )
    assert (decision.action, decision.reason) == (action, reason)


def test_a_check_exactly_one_interval_ago_is_due_again() -> None:
    cached = CachedView("sha256:" + "c" * 64, MEDIA_OCI_MANIFEST, checked_at=NOW - 60)
    decision = decide(
        cached, immutable=False, check_interval_secs=60, accept=None, upstream_up=True, now=NOW
    )
    assert decision.action is Freshness.REVALIDATE


def test_only_revalidate_and_fetch_ask_the_upstream() -> None:
    asking = {
        action
        for action in Freshness
        if decide(
            None if action in (Freshness.FETCH, Freshness.FAIL) else INDEX,
            immutable=action is Freshness.SERVE_CACHE,
            check_interval_secs=0,
            accept=None,
            upstream_up=action is not Freshness.SERVE_STALE and action is not Freshness.FAIL,
            now=NOW,
        ).asks_upstream
    }
    assert asking == {Freshness.FETCH, Freshness.REVALIDATE}
