"""Every storage key of the registry layout, built and parsed in this one place.

    blobs/<alg>/<2 hex>/<hex>                                    content (manifests too)
    repositories/<name>/_manifests/tags/<tag>                    the tag's ManifestRecord
    repositories/<name>/_manifests/revisions/<alg>/<hex>         a manifest's ManifestRecord
    repositories/<name>/_layers/<alg>/<hex>                      the blob was pulled via <name>
    repositories/<name>/_pulls/tags/<tag>                        when the tag was last pulled
    repositories/<name>/_pulls/revisions/<alg>/<hex>             when a digest was last pulled
    _staging/<alg>-<hex>.<id>                                    staged spools (staging.py)
    _lifecycle/released/<alg>/<hex>                              a blob no manifest needs since
    _lifecycle/usage                                             the last measured usage
    _lifecycle/invalidation                                      frontends: forget your memory
    _lifecycle/lock                                              the lifecycle lease (no Redis)

A name never has a component starting with "_" (the spec's grammar), so the first "/_"
after `repositories/` ends the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import RegistryError
from ..oci import Digest, Tag

REPOSITORIES = "repositories/"
BLOBS = "blobs/"
LIFECYCLE = "_lifecycle/"
RELEASED = f"{LIFECYCLE}released/"
USAGE_KEY = f"{LIFECYCLE}usage"
INVALIDATION_KEY = f"{LIFECYCLE}invalidation"
LOCK_KEY = f"{LIFECYCLE}lock"


class KeyKind(StrEnum):
    TAG = "_manifests/tags"
    REVISION = "_manifests/revisions"
    LAYER = "_layers"
    TAG_PULL = "_pulls/tags"
    REVISION_PULL = "_pulls/revisions"


_BY_TAG = (KeyKind.TAG, KeyKind.TAG_PULL)


def blob_key(digest: Digest) -> str:
    return f"{BLOBS}{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repository_prefix(name: str) -> str:
    return f"{REPOSITORIES}{name}/"


def repository_key(kind: KeyKind, name: str, reference: Tag | Digest) -> str:
    """The key of a tag (TAG, TAG_PULL) or a digest (REVISION, LAYER, REVISION_PULL)."""
    if isinstance(reference, Tag):
        if kind not in _BY_TAG:
            raise ValueError(f"{kind.name} keys are by digest")
        return f"{REPOSITORIES}{name}/{kind.value}/{reference.value}"
    if kind in _BY_TAG:
        raise ValueError(f"{kind.name} keys are by tag")
    return f"{REPOSITORIES}{name}/{kind.value}/{reference.algorithm}/{reference.hex}"


def tags_prefix(name: str) -> str:
    """The prefix of a repository's tag keys: a key's remainder is the tag."""
    return f"{repository_prefix(name)}{KeyKind.TAG.value}/"


def repository_of(key: str) -> str | None:
    """The name of the repository a manifest key (a tag or a revision) belongs to."""
    marker = key.find("/_manifests/")
    return key[len(REPOSITORIES) : marker] if key.startswith(REPOSITORIES) and marker > 0 else None


def released_key(digest: Digest) -> str:
    return f"{RELEASED}{digest.algorithm}/{digest.hex}"


@dataclass(frozen=True, slots=True)
class RepositoryKey:
    """A key under `repositories/`, parsed: exactly one of `tag` and `digest` is set."""

    kind: KeyKind
    name: str
    tag: str | None = None
    digest: Digest | None = None


def parse_repository_key(key: str) -> RepositoryKey | None:
    """The parts of a key `repository_key` could have built, else None."""
    if not key.startswith(REPOSITORIES):
        return None
    split = key.find("/_", len(REPOSITORIES))
    if split <= len(REPOSITORIES):
        return None
    name, rest = key[len(REPOSITORIES) : split], key[split + 1 :]
    for kind in KeyKind:
        if not rest.startswith(f"{kind.value}/"):
            continue
        last = rest[len(kind.value) + 1 :]
        try:
            if kind in _BY_TAG:
                return RepositoryKey(kind, name, tag=Tag.parse(last).value)
            return RepositoryKey(kind, name, digest=_digest_path(last))
        except RegistryError:
            return None
    return None


def parse_blob_key(key: str) -> Digest | None:
    if not key.startswith(BLOBS):
        return None
    algorithm, _, rest = key[len(BLOBS) :].partition("/")
    prefix, _, encoded = rest.partition("/")
    try:
        digest = Digest.parse(f"{algorithm}:{encoded}")
    except RegistryError:
        return None
    return digest if digest.hex[:2] == prefix else None


def parse_released_key(key: str) -> Digest | None:
    if not key.startswith(RELEASED):
        return None
    try:
        return _digest_path(key[len(RELEASED) :])
    except RegistryError:
        return None


def _digest_path(text: str) -> Digest:
    algorithm, _, encoded = text.partition("/")
    return Digest.parse(f"{algorithm}:{encoded}")
