"""OCI value types, validated at the edge by the distribution spec's grammars.

Everything the registry core handles is one of these types; a string from a request never
reaches storage or an upstream URL without passing `parse()` here first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Self

from .errors import DigestInvalid, NameInvalid, TagInvalid

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
NAME_MAX_LENGTH = 255

# Digest algorithms we can verify, with the length of their hex encoding.
DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MEDIA_DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_MANIFEST_V1_SIGNED,
    MEDIA_DOCKER_MANIFEST_V1,
)
BLOB_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class RepositoryName:
    """A repository name as a client sends it, e.g. `docker-io/library/nginx`."""

    value: str

    @classmethod
    def parse(cls, text: str) -> Self:
        if not text or len(text) > NAME_MAX_LENGTH or not NAME_RE.match(text):
            raise NameInvalid("invalid repository name", detail={"name": text[:300]})
        return cls(text)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest `algorithm:hex` whose algorithm we can verify."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Self:
        match = DIGEST_RE.match(text)
        if match is None:
            raise DigestInvalid("invalid digest", detail={"digest": text[:200]})
        algorithm, encoded = match.groups()
        expected_length = DIGEST_ALGORITHMS.get(algorithm)
        if expected_length is None:
            raise DigestInvalid("unsupported digest algorithm", detail={"digest": text[:200]})
        if len(encoded) != expected_length or not re.fullmatch(r"[a-f0-9]+", encoded):
            raise DigestInvalid("invalid digest", detail={"digest": text[:200]})
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Self:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True, slots=True)
class Tag:
    value: str

    @classmethod
    def parse(cls, text: str) -> Self:
        if not TAG_RE.match(text):
            raise TagInvalid("invalid tag", detail={"tag": text[:200]})
        return cls(text)

    def __str__(self) -> str:
        return self.value


Reference = Tag | Digest


def parse_reference(text: str) -> Reference:
    """A manifest reference is a digest when it contains ':', otherwise a tag."""
    if ":" in text:
        return Digest.parse(text)
    return Tag.parse(text)


def accepts(accept: str | None, media_type: str) -> bool:
    """Does an Accept header admit this manifest type? No header admits everything, and so
    does one that names no manifest type at all."""
    if not accept:
        return True
    offered = {part.split(";")[0].strip() for part in accept.split(",")}
    return bool(offered & {media_type, "*/*", "application/*", "application/json"}) or not (
        offered & set(MANIFEST_MEDIA_TYPES)
    )
