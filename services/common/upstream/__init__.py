"""Talking to upstream registries: authentication (`auth`), requests (`client`), health
(`health`), failures (`errors`) and the upstreams of each repository (`pool`)."""

from .client import BlobDownload, FetchedManifest, ManifestHead, UpstreamClient, accept_header
from .errors import (
    ManifestTooLarge,
    UpstreamBusy,
    UpstreamCorrupt,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

__all__ = [
    "BlobDownload",
    "FetchedManifest",
    "ManifestHead",
    "ManifestTooLarge",
    "UpstreamBusy",
    "UpstreamClient",
    "UpstreamCorrupt",
    "UpstreamDenied",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamRateLimited",
    "UpstreamUnavailable",
    "accept_header",
]
