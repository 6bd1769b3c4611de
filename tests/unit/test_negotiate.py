"""Manifest content negotiation, decided from the cached type and the client's Accept."""

from __future__ import annotations

import json

import pytest
from simple_registry.common.oci import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_MANIFEST_LIST,
    MEDIA_DOCKER_MANIFEST_V1_SIGNED,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)
from simple_registry.frontend.pullthrough.negotiate import (
    Negotiated,
    default_platform_child,
    negotiate,
)


@pytest.mark.parametrize(
    ("cached", "accept", "outcome"),
    [
        (MEDIA_OCI_INDEX, None, Negotiated.SERVE),
        (MEDIA_OCI_INDEX, "*/*", Negotiated.SERVE),
        (MEDIA_OCI_INDEX, f"{MEDIA_OCI_MANIFEST}, {MEDIA_OCI_INDEX}", Negotiated.SERVE),
        (MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Negotiated.NOT_FOUND),
        (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST, Negotiated.NOT_FOUND),
        (MEDIA_DOCKER_MANIFEST_LIST, MEDIA_DOCKER_MANIFEST, Negotiated.DEFAULT_PLATFORM),
        (MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_MANIFEST_V1_SIGNED, Negotiated.ASK_UPSTREAM),
        (MEDIA_DOCKER_MANIFEST, f"{MEDIA_DOCKER_MANIFEST};q=0.9", Negotiated.SERVE),
    ],
)
def test_each_cached_type_and_accept_has_its_answer(
    cached: str, accept: str | None, outcome: Negotiated
) -> None:
    assert negotiate(cached, accept) is outcome


def test_the_default_platform_of_a_list_is_linux_amd64() -> None:
    listing = {
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }
    assert default_platform_child(json.dumps(listing).encode()) == "sha256:" + "2" * 64
    assert default_platform_child(b'{"manifests": []}') is None
    assert default_platform_child(b"not json") is None
