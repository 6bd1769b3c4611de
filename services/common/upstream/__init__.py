"""Talking to upstream registries: authentication (`auth`) and requests (`client`)."""

from .client import (
    BlobDownload,
    ManifestHead,
    UpstreamClient,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

__all__ = [
    "BlobDownload",
    "ManifestHead",
    "UpstreamClient",
    "UpstreamDenied",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamRateLimited",
    "UpstreamUnavailable",
]
