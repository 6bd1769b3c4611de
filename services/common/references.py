"""What a manifest references: the blobs a kept manifest keeps, and an index's children.

Image manifests (OCI, Docker schema 2) reference a config and layers; an index (OCI index,
Docker manifest list) references child manifests; a schema 1 manifest lists `fsLayers`;
an artifact manifest lists `blobs`. `subject` (a referrer's parent) is not a reference:
a signature does not keep the image it signs.

A manifest that does not parse references nothing we can know: `ManifestUnreadable`, and
the lifecycle keeps every blob that run rather than guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import RegistryError
from .oci import Digest


class ManifestUnreadable(ValueError):
    """The bytes are not a manifest whose references we can read."""


@dataclass(frozen=True, slots=True)
class References:
    blobs: tuple[str, ...]  # config, layers (schema 1: fsLayers), artifact blobs
    children: tuple[str, ...]  # an index's manifests

    @property
    def all(self) -> tuple[str, ...]:
        return self.blobs + self.children


def _digests(entries: Any, field: str) -> list[str]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ManifestUnreadable(f"{field} is not a list")
    found = []
    for entry in entries:
        key = "blobSum" if field == "fsLayers" else "digest"
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise ManifestUnreadable(f"an entry of {field} has no digest")
        try:
            found.append(str(Digest.parse(value)))
        except RegistryError:
            raise ManifestUnreadable(f"an entry of {field} has an invalid digest") from None
    return found


_SHAPES = frozenset({"manifests", "layers", "fsLayers", "blobs", "config"})


def references(data: bytes) -> References:
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ManifestUnreadable("not JSON") from None
    if not isinstance(manifest, dict):
        raise ManifestUnreadable("not a JSON object")
    children = _digests(manifest.get("manifests"), "manifests")
    blobs = _digests(manifest.get("layers"), "layers")
    blobs += _digests(manifest.get("fsLayers"), "fsLayers")
    blobs += _digests(manifest.get("blobs"), "blobs")
    config = manifest.get("config")
    if config is not None:
        blobs += _digests([config], "config")
    if not _SHAPES & manifest.keys():
        raise ManifestUnreadable("neither an image manifest nor an index")
    # Unique, in order (a layer may appear twice in one image).
    return References(tuple(dict.fromkeys(blobs)), tuple(dict.fromkeys(children)))
