"""The one table from upstream failures to what a client is told."""

from __future__ import annotations

import pytest
from simple_registry.common.upstream import (
    ManifestTooLarge,
    UpstreamCorrupt,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from simple_registry.frontend.errors import UPSTREAM_FAILURES, from_upstream_failure
from simple_registry.frontend.pullthrough.answers import Subject, UpstreamFailure

HOST = "registry.example"


@pytest.mark.parametrize(
    ("cause", "subject", "status", "code"),
    [
        (UpstreamNotFound(HOST, "x"), Subject.MANIFEST, 404, "MANIFEST_UNKNOWN"),
        (UpstreamNotFound(HOST, "x"), Subject.BLOB, 404, "BLOB_UNKNOWN"),
        (ManifestTooLarge(HOST, "x"), Subject.MANIFEST, 400, "SIZE_INVALID"),
        (UpstreamRateLimited(HOST, "x", 2.2), Subject.MANIFEST, 429, "TOOMANYREQUESTS"),
        (UpstreamDenied(HOST, "x"), Subject.BLOB, 403, "DENIED"),
        (UpstreamCorrupt(HOST, "x"), Subject.BLOB, 503, "UNAVAILABLE"),
        (UpstreamUnavailable(HOST, "x"), Subject.MANIFEST, 503, "UNAVAILABLE"),
        (UpstreamError(HOST, "x"), Subject.MANIFEST, 503, "UNAVAILABLE"),
    ],
)
def test_each_upstream_failure_has_its_oci_error(
    cause: UpstreamError, subject: Subject, status: int, code: str
) -> None:
    error = from_upstream_failure(UpstreamFailure(cause, subject, {"tag": "latest"}))
    assert (error.status, error.code) == (status, code)


def test_a_rate_limit_keeps_the_remaining_retry_after_rounded_up() -> None:
    failure = UpstreamFailure(UpstreamRateLimited(HOST, "x", 2.2), Subject.BLOB, {})
    assert from_upstream_failure(failure).headers == {"Retry-After": "3"}


def test_a_not_found_names_what_was_asked_for() -> None:
    failure = UpstreamFailure(UpstreamNotFound(HOST, "x"), Subject.MANIFEST, {"tag": "v1"})
    assert from_upstream_failure(failure).body()["errors"][0]["detail"] == {"tag": "v1"}


def test_corrupt_content_is_told_as_such_not_as_an_outage() -> None:
    failure = UpstreamFailure(UpstreamCorrupt(HOST, "x"), Subject.BLOB, {})
    assert "does not match its digest" in from_upstream_failure(failure).message


def test_every_subclass_row_comes_before_its_base_class_row() -> None:
    kinds = [kind for kind, _ in UPSTREAM_FAILURES]
    for index, kind in enumerate(kinds):
        for later in kinds[index + 1 :]:
            assert not issubclass(later, kind) or later is kind, (later, kind)
