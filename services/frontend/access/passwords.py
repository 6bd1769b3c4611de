"""HTTP Basic against `[auth.identity.<id>]`: Argon2 hashes, verified once and remembered.

Argon2 is slow on purpose (tens of milliseconds): a verified header is remembered, keyed by
a hash of it, for a short time, so a pull of 50 blobs pays that cost once. Verification runs
in a thread, a few at a time, so a flood of wrong passwords cannot stall the event loop. An
unknown username costs the same work as a known one (no timing tells which exist).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import argon2

from ...common.config import BasicIdentity
from ...common.lru import LruCache
from ...common.metrics import Metrics

REMEMBER_SECS = 60.0
REMEMBERED_MAX_BYTES = 4 * 1024 * 1024
CONCURRENT_VERIFICATIONS = 2


@dataclass(frozen=True, slots=True)
class VerifiedUser:
    id: str
    username: str


class PasswordVerifier:
    def __init__(self, identities: tuple[BasicIdentity, ...], metrics: Metrics):
        self._metrics = metrics
        self._by_username = {identity.username: identity for identity in identities}
        self._hasher = argon2.PasswordHasher()
        # Spent on unknown usernames, so that they take as long as known ones.
        self._decoy = self._hasher.hash("decoy password for unknown usernames")
        self._remembered: LruCache[VerifiedUser] = LruCache(REMEMBERED_MAX_BYTES)
        self._slots = asyncio.Semaphore(CONCURRENT_VERIFICATIONS)
        self._in_flight: dict[bytes, asyncio.Future[VerifiedUser | None]] = {}

    def knows(self, username: str) -> bool:
        return username in self._by_username

    async def verify(self, header: str, username: str, password: str) -> VerifiedUser | None:
        """The user whose Argon2 hash this password matches; None when it does not.

        Concurrent requests with the same header share one verification: when the
        remembered answer expires under load, Argon2 runs once, not once per request."""
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        remembered = self._remembered.get(key)
        if remembered is not None:
            return remembered
        running = self._in_flight.get(key)
        if running is None:
            running = asyncio.ensure_future(self._verify(key, username, password))
            self._in_flight[key] = running
            running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(running)

    async def _verify(self, key: bytes, username: str, password: str) -> VerifiedUser | None:
        identity = self._by_username.get(username)
        encoded = identity.password_hash if identity is not None else self._decoy
        async with self._slots:
            ok = await asyncio.to_thread(self._matches, encoded, password)
        self._metrics.password_verifications.labels("match" if ok else "mismatch").inc()
        if not ok or identity is None:
            return None
        user = VerifiedUser(identity.id, identity.username)
        self._remembered.put(key, user, ttl=REMEMBER_SECS)
        return user

    def _matches(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
