"""A cache of many images for the web UI's benchmarks (not a benchmark itself).

`fill_storage` writes, straight into a registry's filesystem root and in its layout (the
keys and records of `simple_registry.common.storage`), what N pulls would have left: per
image one tag, one manifest and its three layer links; the config and layers are shared
(as base layers are), each manifest is its own. 10,000 images take a few seconds, where
pulling them through would take an hour.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from simple_registry.common.oci import Digest, Tag
from simple_registry.common.storage.keys import KeyKind, blob_key, repository_key
from simple_registry.common.storage.layout import ManifestRecord

from tests.fixtures.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, canonical_json

REPOSITORY = "hub"
TAG = "1.0"


def image_name(index: int) -> str:
    return f"{REPOSITORY}/bench/img-{index:05d}"


def _put(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = Digest.of_bytes(data)
    _put(root, blob_key(digest), data)
    return {"digest": str(digest), "size": len(data)}


def fill_storage(root: Path, images: int) -> float:
    """Write `images` cached images under `root`; returns the seconds it took."""
    started = time.monotonic()
    config = {
        "mediaType": OCI_CONFIG,
        **_blob(
            root,
            canonical_json(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Cmd": ["/bin/sh"]},
                    "rootfs": {"type": "layers", "diff_ids": []},
                }
            ),
        ),
    }
    layers = [
        {"mediaType": OCI_LAYER_GZIP, **_blob(root, f"layer {n}\n".encode() * (1000 * (n + 1)))}
        for n in range(3)
    ]
    now = time.time()
    for index in range(images):
        name = image_name(index)
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": layers,
                "annotations": {"org.example.image": name},
            }
        )
        described = _blob(root, manifest)
        digest = Digest.parse(str(described["digest"]))
        record = ManifestRecord(str(digest), OCI_MANIFEST, len(manifest), now - index)
        _put(root, repository_key(KeyKind.REVISION, name, digest), record.to_json())
        _put(root, repository_key(KeyKind.TAG, name, Tag(TAG)), record.to_json())
        for blob in (config, *layers):
            link = repository_key(KeyKind.LAYER, name, Digest.parse(str(blob["digest"])))
            _put(root, link, json.dumps({"size": blob["size"]}).encode())
    return time.monotonic() - started
