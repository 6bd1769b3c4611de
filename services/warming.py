"""`simple-registry warm NAME:TAG [--platform OS/ARCH ...]`: fetch an image into the cache
before anyone pulls it (Angos recommends pre-warming off-peak).

It runs in this process with the frontend's own services — the app factory's, started
without a listener — so a warm costs the upstream exactly what one pull costs, with the
configured upstreams, credentials, limits and storage:

- with the in-process queue (no `[queue.redis]`), an embedded cacher in this process
  commits what it fetched into the configured storage, where a running `server` (same
  folder or bucket) finds it;
- with `[queue.redis]`, the cache jobs go to the shared queue and the running cachers
  commit them (the jobs are signed with `job_signing_key`, as a frontend's are).

Either way the command returns once storage holds the tag, every manifest and every blob,
and exits 1 when that has not happened after `--timeout` seconds (no cacher running?).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from .cacher.service import embedded_cacher
from .common.config import ConfigError, Settings
from .common.errors import RegistryError
from .common.manifests import Platform
from .common.oci import RepositoryName, Tag
from .frontend.app import create_app
from .frontend.pullthrough.answers import UpstreamFailure
from .frontend.pullthrough.warm import WarmFailed, missing_from_storage, warm
from .frontend.state import FRONTEND

log = logging.getLogger(__name__)

POLL_SECS = 0.2
EXIT_FAILED = 1
EXIT_USAGE = 2


def parse_image(text: str) -> tuple[RepositoryName, Tag]:
    """`name:tag` (the tag after the last colon of the last path segment)."""
    head, _, last = text.rpartition("/")
    image, separator, tag = last.partition(":")
    if not separator:
        raise ValueError(f"name an image and a tag, as in docker-io/library/nginx:1.25: {text!r}")
    name = f"{head}/{image}" if head else image
    return RepositoryName.parse(name), Tag.parse(tag)


async def warm_command(
    settings: Settings, image: str, platforms: list[str], timeout_secs: float
) -> int:
    try:
        name, tag = parse_image(image)
        wanted = [Platform.parse(text) for text in platforms]
    except (ValueError, RegistryError) as error:
        print(f"simple-registry warm: {error}")
        return EXIT_USAGE
    if settings.queue is not None and settings.queue.job_signing_key is None:
        raise ConfigError(
            "queue.redis.job_signing_key_file",
            None,
            "the job signing key the cachers use: `warm` enqueues cache jobs for them",
        )
    app = create_app(settings)
    if settings.queue is None:
        app.cleanup_ctx.append(embedded_cacher)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        frontend = app[FRONTEND]
        try:
            route = frontend.runtime.router.resolve(name)
            report = await warm(frontend.manifests, frontend.blobs, route, tag, wanted)
        except (RegistryError, UpstreamFailure, WarmFailed) as error:
            print(f"simple-registry warm: {name.value}:{tag.value}: {error}")
            return EXIT_FAILED
        print(f"warmed {report.name}:{report.tag} {report.digest}")
        for manifest in report.manifests[1:]:
            print(f"  {manifest.platform or '(no platform)'} {manifest.digest}")
        for skipped in report.skipped_platforms:
            print(f"  skipped {skipped}")
        print(
            f"blobs: {report.blobs_fetched} fetched ({report.bytes_fetched} bytes), "
            f"{report.blobs_cached} already cached"
        )
        deadline = time.monotonic() + timeout_secs
        missing = await missing_from_storage(frontend.runtime.storage, report)
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECS)
            missing = await missing_from_storage(frontend.runtime.storage, report)
        if missing:
            print(
                f"simple-registry warm: not stored after {timeout_secs:.0f}s "
                f"(is a cacher running?): {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
            return EXIT_FAILED
        print(f"stored: {len(report.manifests)} manifests, {len(report.blobs)} blobs")
        return 0
    finally:
        await runner.cleanup()
