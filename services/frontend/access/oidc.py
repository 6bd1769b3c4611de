"""OIDC: JWTs verified against their issuer's published keys (`[auth.oidc.<name>]`).

A token is presented as `Authorization: Bearer <jwt>`, or as Basic with the provider's name as
the username and the JWT as the password (how `docker login` carries it). The issuer's JWKS
is fetched on first use (from `jwks_uri`, or the issuer's discovery document), refreshed every
`jwks_refresh_interval`, and fetched again, at most once a minute, when a token names a key it
does not have. A fetch that fails is a 503: the registry cannot tell, not "unauthorized".
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from ...common.config import OidcProvider
from ...common.errors import BackendUnavailable
from ...common.tlsclient import client_context

log = logging.getLogger(__name__)

UNKNOWN_KEY_REFETCH_SECS = 60.0


class TokenInvalid(Exception):
    """The token does not verify (signature, issuer, audience, time, claims)."""


@dataclass
class _Keys:
    by_kid: dict[str, Any] = field(default_factory=dict)
    unnamed: list[Any] = field(default_factory=list)
    fetched_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OidcVerifier:
    def __init__(self, providers: tuple[OidcProvider, ...], session: aiohttp.ClientSession):
        self.providers = {provider.name: provider for provider in providers}
        self._by_issuer = {provider.issuer: provider for provider in providers}
        self._session = session
        self._keys: dict[str, _Keys] = {name: _Keys() for name in self.providers}

    def provider_of(self, token: str) -> OidcProvider | None:
        """The provider whose issuer the (not yet verified) token names."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return None
        return self._by_issuer.get(issuer) if isinstance(issuer, str) else None

    async def verify(self, token: str, provider: OidcProvider) -> dict[str, Any]:
        """The token's claims, once signature, issuer, audience, times and claims hold."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenInvalid(f"not a JWT: {error}") from None
        algorithm = header.get("alg")
        if algorithm not in provider.allowed_algorithms:
            raise TokenInvalid(f"algorithm {algorithm!r} is not allowed")
        key = await self._key(provider, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(provider.allowed_algorithms),
                audience=provider.required_audience,
                issuer=provider.issuer,
                leeway=provider.clock_skew_tolerance_secs,
                options={
                    "require": ["exp", "iss"],
                    "verify_aud": provider.required_audience is not None,
                },
            )
        except jwt.PyJWTError as error:
            raise TokenInvalid(str(error)) from None
        missing = [name for name in provider.required_claims if claims.get(name) is None]
        if missing:
            raise TokenInvalid(f"required claims missing: {', '.join(missing)}")
        return claims

    async def _key(self, provider: OidcProvider, kid: Any) -> Any:
        keys = self._keys[provider.name]
        now = time.monotonic()
        if not keys.fetched_at or now - keys.fetched_at > provider.jwks_refresh_interval_secs:
            await self._refresh(provider, keys)
        found = self._pick(keys, kid)
        if found is None and time.monotonic() - keys.fetched_at > UNKNOWN_KEY_REFETCH_SECS:
            await self._refresh(provider, keys)
            found = self._pick(keys, kid)
        if found is None:
            raise TokenInvalid(f"no key {kid!r} in the issuer's JWKS")
        return found

    @staticmethod
    def _pick(keys: _Keys, kid: Any) -> Any:
        if isinstance(kid, str):
            return keys.by_kid.get(kid)
        if len(keys.unnamed) + len(keys.by_kid) == 1:
            return (keys.unnamed or list(keys.by_kid.values()))[0]
        return None

    async def _refresh(self, provider: OidcProvider, keys: _Keys) -> None:
        async with keys.lock:
            try:
                jwks_uri = provider.jwks_uri or await self._discover(provider)
                document = await self._get_json(provider, jwks_uri)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning("oidc keys unavailable provider=%s: %s", provider.name, error)
                raise BackendUnavailable(
                    "the identity provider's keys cannot be fetched; retry later",
                    detail={"provider": provider.name},
                ) from None
            by_kid: dict[str, Any] = {}
            unnamed: list[Any] = []
            for entry in document.get("keys", []) if isinstance(document, dict) else []:
                try:
                    key = jwt.PyJWK(entry).key
                except (jwt.PyJWTError, ValueError, TypeError):
                    continue  # a key type we cannot use; others may do
                kid = entry.get("kid")
                if isinstance(kid, str):
                    by_kid[kid] = key
                else:
                    unnamed.append(key)
            keys.by_kid, keys.unnamed = by_kid, unnamed
            keys.fetched_at = time.monotonic()
            log.info(
                "oidc keys fetched provider=%s keys=%d", provider.name, len(by_kid) + len(unnamed)
            )

    async def _discover(self, provider: OidcProvider) -> str:
        url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(provider, url)
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(jwks_uri, str):
            raise ValueError("the discovery document names no jwks_uri")
        return jwks_uri

    async def _get_json(self, provider: OidcProvider, url: str) -> Any:
        ssl_context: ssl.SSLContext | bool = client_context(provider.server_ca_bundle) or True
        timeout = aiohttp.ClientTimeout(total=provider.http_request_timeout_secs)
        # The shared session does not decompress (blobs pass through as sent): ask for none.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with self._session.get(
            url, timeout=timeout, ssl=ssl_context, headers=headers
        ) as response:
            if response.status != 200:
                raise ValueError(f"{url} answered {response.status}")
            return await response.json(content_type=None)
