"""Live configuration reload: when a configuration file changes, or on SIGHUP.

A new configuration that does not load is rejected with its reason and the running one
stays. Keys that need a restart (the listener, the storage backend, the queue, the size
limits, the cacher's status port) are named in a warning and keep their running values;
everything else (repositories, upstreams and their credentials, immutability, access and
retention policies, the UI) is applied to the next request. A request in flight keeps the
settings it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .background import running
from .config import ConfigError, Settings, load_settings
from .metrics import Metrics

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECS = 2.0


def _restart_values(settings: Settings) -> dict[str, Any]:
    """What only a restart changes, by the key an operator would look for."""
    server = settings.server
    return {
        "server.bind_address": server.bind_address,
        "server.port": server.port,
        "server.workers": server.workers,
        "server.drain_timeout_secs": server.drain_timeout_secs,
        # The certificate files themselves are reloaded when they change.
        "server.tls": server.tls,
        "blob_store": settings.storage,
        "queue.redis": settings.queue,
        "cacher": settings.cacher,
        "global.max_manifest_size": settings.global_.max_manifest_size,
        "global.max_blob_size": settings.global_.max_blob_size,
        "global.enable_blob_redirect": settings.global_.enable_blob_redirect,
    }


def keep_restart_keys(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """`new` with the running values of the keys that need a restart, and their names."""
    old_values, new_values = _restart_values(running), _restart_values(new)
    changed = [key for key in old_values if old_values[key] != new_values[key]]
    kept = replace(
        new,
        server=running.server,
        storage=running.storage,
        queue=running.queue,
        cacher=running.cacher,
        global_=replace(
            new.global_,
            max_manifest_size=running.global_.max_manifest_size,
            max_blob_size=running.global_.max_blob_size,
            enable_blob_redirect=running.global_.enable_blob_redirect,
        ),
    )
    return kept, changed


def fingerprint(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class ConfigWatcher:
    def __init__(
        self,
        paths: list[Path],
        running: Settings,
        metrics: Metrics,
        apply: Callable[[Settings], None],
    ):
        self.paths = paths
        self.running = running
        self._metrics = metrics
        self._apply = apply
        self._stamps = self._read_stamps()
        self._hash = fingerprint(paths)
        self._wake = asyncio.Event()
        metrics.config_info.labels(self._hash).set(1)
        metrics.config_reload_time.set(time.time())

    def _read_stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self.paths:
            try:
                stat = path.stat()  # follows symlinks: a ConfigMap's ..data swap counts
                stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def reload(self, why: str) -> bool:
        """Load the files again and apply what may change live; False when rejected."""
        try:
            new = load_settings(self.paths)
        except ConfigError as error:
            log.error("configuration reload rejected (%s): %s; the running one stays", why, error)
            self._metrics.config_reloads.labels("rejected").inc()
            return False
        kept, changed = keep_restart_keys(self.running, new)
        for key in changed:
            log.warning("configuration key %s changed: it needs a restart (kept as running)", key)
        try:
            self._apply(kept)
        except Exception:
            log.exception("configuration reload failed to apply (%s); the running one stays", why)
            self._metrics.config_reloads.labels("failed").inc()
            return False
        self.running = kept
        self._metrics.config_info.labels(self._hash).set(0)
        self._hash = fingerprint(self.paths)
        self._metrics.config_info.labels(self._hash).set(1)
        self._metrics.config_reload_time.set(time.time())
        self._metrics.config_reloads.labels("applied").inc()
        log.info("configuration reloaded (%s) hash=%s", why, self._hash)
        return True

    def request_reload(self) -> None:
        """From a signal handler: reload soon, in the loop."""
        self._wake.set()

    async def watch(self, _app: object = None) -> AsyncIterator[None]:
        """cleanup_ctx (or `async with`-style use): watch the files, and SIGHUP."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            async with running(self._run()):
                yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_INTERVAL_SECS)
            if self._wake.is_set():
                self._wake.clear()
                self._stamps = self._read_stamps()
                self.reload("SIGHUP")
                continue
            stamps = self._read_stamps()
            if stamps != self._stamps:
                self._stamps = stamps
                self.reload("file changed")
