"""Serving TLS (`[server.tls]`), mTLS identities, and certificates reloaded when they change.

Reload: the files are checked every few seconds. A new certificate chain is loaded into the
serving context in place (every new handshake uses it); a new context with the new CA bundle
is also swapped in through the SNI callback. A client that sends no SNI keeps being checked
against the CA bundle loaded at start plus any added since (OpenSSL cannot forget a CA),
until the next restart. A file that no longer loads keeps the previous one in force.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ...common.background import running
from ...common.config import TlsSettings

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECS = 2.0


def _context(settings: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.server_certificate_bundle, settings.server_private_key)
    if settings.client_ca_bundle is not None:
        context.load_verify_locations(settings.client_ca_bundle)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.client_auth == "required" else ssl.CERT_OPTIONAL
        )
    return context


def certificate_names(peercert: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(common names, organizations) of a verified client certificate's subject, in order."""
    if not isinstance(peercert, dict):
        return (), ()
    common_names: list[str] = []
    organizations: list[str] = []
    for rdn in peercert.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                common_names.append(value)
            elif attribute == "organizationName":
                organizations.append(value)
    return tuple(common_names), tuple(organizations)


class ServerTls:
    def __init__(self, settings: TlsSettings):
        self.settings = settings
        self.context = _context(settings)
        self._current = self.context
        self.context.sni_callback = self._choose
        self._stamps = self._read_stamps()
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self.settings.client_ca_bundle is not None

    def _choose(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._current is not self.context:
            ssl_object.context = self._current

    def _files(self) -> list[Path]:
        files = [self.settings.server_certificate_bundle, self.settings.server_private_key]
        if self.settings.client_ca_bundle is not None:
            files.append(self.settings.client_ca_bundle)
        return files

    def _read_stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._files():
            try:
                stat = path.stat()
                stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def reload_if_changed(self) -> bool:
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            fresh = _context(self.settings)
            self.context.load_cert_chain(
                self.settings.server_certificate_bundle, self.settings.server_private_key
            )
            if self.settings.client_ca_bundle is not None:
                self.context.load_verify_locations(self.settings.client_ca_bundle)
        except (ssl.SSLError, OSError, ValueError) as error:
            log.error("TLS files changed but do not load (%s); the previous ones stay", error)
            return False
        self._current = fresh
        self.reloads += 1
        log.info("TLS certificate files reloaded")
        return True

    async def watch(self, _app: object) -> AsyncIterator[None]:
        """cleanup_ctx: check the files while the app runs."""
        async with running(self._watch()):
            yield

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_SECS)
            # In the loop thread: the context must not change under a handshake in progress.
            self.reload_if_changed()
