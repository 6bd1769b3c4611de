"""Content negotiation for manifests, as CNCF Distribution answers it: decided locally from
the cached (canonical) manifest's type and the client's Accept, so that a cold and a warm
request answer the same and a narrow Accept costs no upstream request per pull.

| cached type               | client does not accept it, and        | answer                          |
|---------------------------|---------------------------------------|---------------------------------|
| OCI index                 |                                       | 404 MANIFEST_UNKNOWN            |
| OCI image manifest        |                                       | 404 MANIFEST_UNKNOWN            |
| Docker manifest list      | accepts the linux/amd64 child's type  | that child (by digest)          |
| Docker manifest list      | does not accept the child's type      | ask the upstream (schema 1)     |
| Docker schema 2 manifest  |                                       | ask the upstream (schema 1)     |

No Accept header, or one naming no manifest type, admits everything (`oci.accepts`).
"""

from __future__ import annotations

from enum import StrEnum

from ...common.manifests import ManifestUnreadable, parse_manifest
from ...common.oci import (
    MEDIA_DOCKER_MANIFEST_LIST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    accepts,
)

# The platform Distribution picks from a manifest list for a client that cannot take lists.
DEFAULT_PLATFORM = ("linux", "amd64")


class Negotiated(StrEnum):
    SERVE = "serve"
    NOT_FOUND = "not-found"
    DEFAULT_PLATFORM = "default-platform"
    ASK_UPSTREAM = "ask-upstream"


def negotiate(media_type: str, accept: str | None) -> Negotiated:
    if accepts(accept, media_type):
        return Negotiated.SERVE
    if media_type in (MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST):
        return Negotiated.NOT_FOUND
    if media_type == MEDIA_DOCKER_MANIFEST_LIST:
        return Negotiated.DEFAULT_PLATFORM
    return Negotiated.ASK_UPSTREAM


def default_platform_child(list_bytes: bytes) -> str | None:
    """The digest of a manifest list's linux/amd64 entry, or None."""
    try:
        contents = parse_manifest(list_bytes, MEDIA_DOCKER_MANIFEST_LIST)
    except ManifestUnreadable:
        return None
    for child in contents.manifests:
        platform = child.platform
        if platform is not None and (platform.os, platform.architecture) == DEFAULT_PLATFORM:
            return str(child.digest)
    return None


def not_acceptable_message(media_type: str) -> str:
    kind = "OCI index" if media_type == MEDIA_OCI_INDEX else "OCI manifest"
    return f"{kind} found, but the Accept header does not admit it"
