"""Storage: one registry layout (`layout.py`) over object stores (filesystem, S3)."""

from .layout import BlobInfo, ManifestRecord, RegistryStorage
from .objects import DigestMismatch, ObjectStore, ObjectWriter

__all__ = [
    "BlobInfo",
    "DigestMismatch",
    "ManifestRecord",
    "ObjectStore",
    "ObjectWriter",
    "RegistryStorage",
]
