"""What a frontend holds while it runs, under one typed app key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..common.runtime import Runtime
from .pullthrough.blobs import BlobService
from .pullthrough.jobs import JobSubmitter
from .pullthrough.manifests import ManifestService
from .pullthrough.memory import PullMemory
from .pullthrough.referrers import ReferrersService
from .pullthrough.tags import TagLister


@dataclass
class Frontend:
    runtime: Runtime
    memory: PullMemory
    jobs: JobSubmitter
    manifests: ManifestService
    blobs: BlobService
    referrers: ReferrersService
    tags: TagLister


FRONTEND = web.AppKey("frontend", Frontend)
