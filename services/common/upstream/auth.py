"""Upstream authentication: `WWW-Authenticate` parsing and a token cache.

Docker's token flow: an anonymous request gets `401` with
`WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; a GET of the realm (with
Basic credentials when configured) returns a token valid for `expires_in` seconds. Tokens
are cached per (realm, service, scope, user) and refreshed on expiry or on a 401.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass

_PARAM_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
# Refresh this long before the upstream says the token expires.
_EXPIRY_MARGIN_SECS = 10.0
DEFAULT_TOKEN_LIFETIME_SECS = 60.0


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


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """Bearer tokens by (realm, service, scope, user); process-local and safe to lose."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, str], _Token] = {}

    def get(self, key: tuple[str, str, str, str]) -> str | None:
        token = self._tokens.get(key)
        if token is None:
            return None
        if token.expires_at <= time.monotonic():
            del self._tokens[key]
            return None
        return token.value

    def put(self, key: tuple[str, str, str, str], value: str, expires_in: float) -> None:
        lifetime = max(expires_in - _EXPIRY_MARGIN_SECS, expires_in / 2, 1.0)
        self._tokens[key] = _Token(value, time.monotonic() + lifetime)

    def drop(self, key: tuple[str, str, str, str]) -> None:
        self._tokens.pop(key, None)
