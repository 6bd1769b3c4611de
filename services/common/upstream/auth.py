"""Upstream authentication: `WWW-Authenticate` parsing and a token cache.

Docker's token flow: an anonymous request gets `401` with
`WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; a GET of the realm (with
Basic credentials when configured) returns a token valid for `expires_in` seconds. Tokens
are cached per (realm, service, scope, user) and refreshed on expiry or on a 401. The cache
is one bounded LRU (`common/lru.py`): a mirror pulling millions of names keeps the most
recently used tokens, and an evicted one costs one token request.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ..lru import LruCache

_PARAM_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
# Refresh this long before the upstream says the token expires.
_EXPIRY_MARGIN_SECS = 10.0
DEFAULT_TOKEN_LIFETIME_SECS = 60.0
# Docker Hub's tokens are about 1-2 KB: some thousands of names' tokens.
TOKEN_CACHE_BYTES = 8 * 1024 * 1024

TokenKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercase
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenge(header: str) -> Challenge | None:
    """Parse one `WWW-Authenticate` value; None when it is not Basic or Bearer."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = {}
    for match in _PARAM_RE.finditer(rest):
        key, quoted, bare = match.groups()
        value = quoted if quoted is not None else bare
        params[key.lower()] = value.replace('\\"', '"')
    return Challenge(scheme, params)


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class TokenCache:
    """Bearer tokens by (realm, service, scope, user); process-local and safe to lose."""

    def __init__(self, max_bytes: int = TOKEN_CACHE_BYTES) -> None:
        self._tokens: LruCache[str] = LruCache(max_bytes)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def weight(self) -> int:
        return self._tokens.weight

    def get(self, key: TokenKey) -> str | None:
        return self._tokens.get(key)

    def put(self, key: TokenKey, value: str, expires_in: float) -> None:
        lifetime = max(expires_in - _EXPIRY_MARGIN_SECS, expires_in / 2, 1.0)
        weight = len(value) + sum(len(part) for part in key)
        self._tokens.put(key, value, weight=weight, ttl=lifetime)

    def drop(self, key: TokenKey) -> None:
        self._tokens.pop(key)
