"""What a manifest refers to, read from its JSON: the config and layers of an image (an
artifact's `blobs`, schema 1's `fsLayers`), the child manifests of an index with their
platforms, the subject of a referrer, annotations.

Pure functions over bytes, the one reader of manifests: warming, the web UI, negotiation
and the cache lifecycle (`references`) use it. Every digest is validated; bytes that are
not a manifest raise `ManifestUnreadable`. `subject` (a referrer's parent) is not a
reference: a signature does not keep the image it signs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .errors import RegistryError
from .oci import Digest


class ManifestUnreadable(ValueError):
    """The bytes are not a manifest whose contents we can read."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Self:
        """`os/architecture[/variant]`, e.g. `linux/arm64/v8`."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(part.strip() for part in parts):
            raise ValueError(f"a platform is os/architecture[/variant], not {text[:100]!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, wanted: Platform) -> bool:
        """Is this the platform `wanted` asks for (any variant when it names none)?"""
        return (
            self.os == wanted.os
            and self.architecture == wanted.architecture
            and (wanted.variant is None or self.variant == wanted.variant)
        )

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int | None
    platform: Platform | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ManifestContents:
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()  # an index's children
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    is_index: bool = False

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The config and the layers, in that order."""
        return ((self.config,) if self.config is not None else ()) + self.layers

    @property
    def blob_bytes(self) -> int:
        """Bytes of the config and layers (those whose size the manifest states)."""
        return sum(blob.size or 0 for blob in self.blobs)


_SHAPES = frozenset({"manifests", "layers", "fsLayers", "blobs", "config"})


def parse_manifest(data: bytes, media_type: str) -> ManifestContents:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestUnreadable(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ManifestUnreadable("not a JSON object")
    if isinstance(document.get("fsLayers"), list):
        return _schema1(document, media_type)
    if not _SHAPES & document.keys():
        raise ManifestUnreadable("neither an image manifest nor an index")
    is_index = isinstance(document.get("manifests"), list) and "layers" not in document
    layers = "blobs" if "blobs" in document and "layers" not in document else "layers"
    return ManifestContents(
        media_type=media_type,
        config=_descriptor(document.get("config"), "config"),
        layers=_descriptors(document.get(layers), layers),
        manifests=_descriptors(document.get("manifests"), "manifests"),
        subject=_descriptor(document.get("subject"), "subject"),
        artifact_type=_text(document.get("artifactType")),
        annotations=_annotations(document.get("annotations")),
        is_index=is_index,
    )


def _schema1(document: dict[str, Any], media_type: str) -> ManifestContents:
    """Docker schema 1: layers named by `blobSum`, newest first, sizes not stated."""
    layers: list[Descriptor] = []
    seen: set[Digest] = set()
    for entry in reversed(document["fsLayers"]):
        digest = _digest(entry.get("blobSum") if isinstance(entry, dict) else None, "fsLayers")
        if digest not in seen:
            seen.add(digest)
            layers.append(Descriptor("application/octet-stream", digest, None))
    return ManifestContents(media_type=media_type, layers=tuple(layers))


def _descriptors(value: Any, where: str) -> tuple[Descriptor, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ManifestUnreadable(f"{where} is not a list")
    found = []
    for item in value:
        descriptor = _descriptor(item, where)
        if descriptor is not None:
            found.append(descriptor)
    return tuple(found)


def _descriptor(value: Any, where: str) -> Descriptor | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestUnreadable(f"a descriptor in {where} is not an object")
    size = value.get("size")
    return Descriptor(
        media_type=_text(value.get("mediaType")) or "",
        digest=_digest(value.get("digest"), where),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        platform=_platform(value.get("platform")),
        artifact_type=_text(value.get("artifactType")),
        annotations=_annotations(value.get("annotations")),
    )


def _digest(value: Any, where: str) -> Digest:
    if not isinstance(value, str):
        raise ManifestUnreadable(f"a descriptor in {where} has no digest")
    try:
        return Digest.parse(value)
    except RegistryError as error:
        raise ManifestUnreadable(f"a descriptor in {where}: {error}") from error


def _platform(value: Any) -> Platform | None:
    if not isinstance(value, dict):
        return None
    os_name, architecture = _text(value.get("os")), _text(value.get("architecture"))
    if not os_name or not architecture:
        return None
    return Platform(os_name, architecture, _text(value.get("variant")) or None)


def _annotations(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items() if isinstance(item, str | int)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class References:
    """What a kept manifest keeps: its blobs, and an index's children."""

    blobs: tuple[str, ...]  # config and layers (artifact blobs, schema 1 fsLayers)
    children: tuple[str, ...]  # an index's manifests

    @property
    def all(self) -> tuple[str, ...]:
        return self.blobs + self.children


def references(data: bytes) -> References:
    contents = parse_manifest(data, "")
    # Unique, in order (a layer may appear twice in one image).
    blobs = dict.fromkeys(str(blob.digest) for blob in contents.blobs)
    children = dict.fromkeys(str(child.digest) for child in contents.manifests)
    return References(tuple(blobs), tuple(children))
