"""Who gets in: authenticate a request, decide on its action, say how to refuse.

Order (as Angos): a verified client certificate gives its names; then credentials: a Bearer
JWT (OIDC), or Basic — a provider's name with a JWT, or an `[auth.identity]` user. Missing
credentials are anonymous; credentials that do not verify are a 401, never anonymous.
Then the global policy, the repository's (when it declares one), then the webhook.

Decisions are remembered (bounded, short TTL) by everything a rule can see, so a warm pull
pays for the rules once per identity and reference, not per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from ipaddress import ip_address

import aiohttp
from aiohttp import web

from ...common.config import AccessPolicy, Settings
from ...common.errors import Denied, RegistryError, Unauthorized
from ...common.lru import LruCache
from ...common.metrics import Metrics
from ...common.routing import Route
from ..actions import Action
from .identity import Identity
from .oidc import OidcVerifier, TokenInvalid
from .passwords import PasswordVerifier
from .policy import PolicyEvaluator, Verdict
from .tls import certificate_names
from .webhook import WebhookAuthorizer

log = logging.getLogger(__name__)

DECISION_CACHE_BYTES = 8 * 1024 * 1024
DECISION_TTL_SECS = 30.0
OIDC_CACHE_SECS = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class AccessControl:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, metrics: Metrics):
        self.realm = "simple-registry"
        self._session = session
        self._metrics = metrics
        self._policies = PolicyEvaluator()
        self.reconfigure(settings)

    def reconfigure(self, settings: Settings) -> None:
        """New identities, providers, webhooks and policies (a live reload): decided by
        them from the next request; remembered decisions and credentials are forgotten."""
        self.settings = settings
        self._passwords = PasswordVerifier(settings.auth.identities, self._metrics)
        self._oidc = OidcVerifier(settings.auth.oidc, self._session)
        self._webhooks = WebhookAuthorizer(settings.auth.webhooks, self._session, self._metrics)
        self._decisions: LruCache[Verdict] = LruCache(DECISION_CACHE_BYTES)
        self._tokens: LruCache[Identity] = LruCache(DECISION_CACHE_BYTES)
        self._trusted_proxies = settings.global_.trusted_proxies

    # -- authentication -------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Identity:
        common_names: tuple[str, ...] = ()
        organizations: tuple[str, ...] = ()
        transport = request.transport
        if transport is not None:
            common_names, organizations = certificate_names(transport.get_extra_info("peercert"))
        base = Identity(
            method="mtls" if common_names or organizations else "anonymous",
            client_ip=self._client_ip(request),
            common_names=common_names,
            organizations=organizations,
        )
        header = request.headers.get("Authorization")
        # With no identities and no OIDC provider there is nothing to check credentials
        # against: they are ignored, as by a registry without authentication.
        if not header or not self.settings.auth.accepts_credentials:
            return base
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._oidc.providers:
            return await self._bearer(base, credentials.strip())
        if scheme == "basic":
            return await self._basic(base, header, credentials.strip())
        # Credentials this registry cannot check: refused, never taken as anonymous.
        self._count("unsupported", "failed")
        raise self._unauthorized("credentials of an unsupported kind")

    async def _bearer(self, base: Identity, token: str) -> Identity:
        provider = self._oidc.provider_of(token)
        if provider is None:
            self._count("oidc", "failed")
            raise self._unauthorized("a bearer token from no configured issuer")
        return await self._oidc_identity(base, provider.name, token)

    async def _basic(self, base: Identity, header: str, credentials: str) -> Identity:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            self._count("basic", "failed")
            raise self._unauthorized("malformed Basic credentials") from None
        username, separator, password = decoded.partition(":")
        if not separator:
            self._count("basic", "failed")
            raise self._unauthorized("malformed Basic credentials")
        if username in self._oidc.providers and not self._passwords.knows(username):
            return await self._oidc_identity(base, username, password)
        user = await self._passwords.verify(header, username, password)
        if user is None:
            self._count("basic", "failed")
            raise self._unauthorized("wrong username or password")
        self._count("basic", "success")
        return replace(base, method="basic", id=user.id, username=user.username)

    async def _oidc_identity(self, base: Identity, provider_name: str, token: str) -> Identity:
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        remembered = self._tokens.get(key)
        if remembered is None:
            provider = self._oidc.providers[provider_name]
            try:
                claims = await self._oidc.verify(token, provider)
            except TokenInvalid as error:
                self._count("oidc", "failed")
                raise self._unauthorized(f"token refused: {error}") from None
            remembered = Identity(method="oidc", oidc_provider=provider.name, oidc_claims=claims)
            expires = claims.get("exp")
            ttl = OIDC_CACHE_SECS
            if isinstance(expires, int | float):
                ttl = max(0.0, min(ttl, float(expires) - time.time()))
            if ttl > 0:
                self._tokens.put(key, remembered, ttl=ttl)
        self._count("oidc", "success")
        return replace(
            base,
            method="oidc",
            oidc_provider=remembered.oidc_provider,
            oidc_claims=remembered.oidc_claims,
        )

    def _client_ip(self, request: web.Request) -> str | None:
        peer = request.remote
        if not peer or not self._trusted_proxies:
            return peer
        try:
            address = ip_address(peer)
        except ValueError:
            return peer
        if not any(address in network for network in self._trusted_proxies):
            return peer
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            # The right-most address the trusted proxy did not add itself.
            for candidate in reversed([part.strip() for part in forwarded.split(",")]):
                try:
                    hop = ip_address(candidate)
                except ValueError:
                    break
                if not any(hop in network for network in self._trusted_proxies):
                    return str(hop)
        real_ip = request.headers.get("X-Real-IP")
        if real_ip:
            try:
                return str(ip_address(real_ip.strip()))
            except ValueError:
                pass
        return peer

    # -- authorization --------------------------------------------------------------------

    def verdict(self, identity: Identity, action: Action, route: Route | None) -> Verdict:
        """The policies' answer (global, then the repository's when it declares one)."""
        request_variables = action.request_variables()
        repository_policy: AccessPolicy | None = (
            route.repository.access_policy if route is not None else None
        )
        key = (
            identity.cache_key(),
            tuple(sorted(request_variables.items(), key=lambda item: item[0])),
            route.repository.name if route is not None else None,
        )
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        variables = {"identity": identity.variables(), "request": request_variables}
        verdict = self._policies.evaluate(self.settings.global_.access_policy, variables)
        if verdict.allowed and repository_policy is not None:
            repository_verdict = self._policies.evaluate(repository_policy, variables)
            if not repository_verdict.allowed:
                verdict = Verdict(False, f"repository {repository_verdict.reason}")
        self._decisions.put(key, verdict, ttl=DECISION_TTL_SECS)
        return verdict

    async def decide(
        self, request: web.Request, identity: Identity, action: Action, route: Route | None
    ) -> Decision:
        verdict = self.verdict(identity, action, route)
        decision = Decision(verdict.allowed, verdict.reason)
        webhook = (
            route.repository.authorization_webhook
            if route is not None
            else self.settings.global_.authorization_webhook
        )
        if decision.allowed and webhook:
            allowed = await self._webhooks.allows(
                webhook,
                action,
                identity,
                {
                    "method": request.method,
                    "scheme": request.scheme,
                    "host": request.host,
                    "uri": request.path_qs,
                },
                {name.lower(): request.headers.getall(name) for name in request.headers},
            )
            if not allowed:
                decision = Decision(False, f"webhook {webhook}")
        self._metrics.access_decisions.labels(
            action.name, "allow" if decision.allowed else "deny"
        ).inc()
        return decision

    def refusal(self, identity: Identity) -> RegistryError:
        """How a denied request is answered: anonymous clients are told to log in, and
        neither answer says whether the repository exists or is cached."""
        if identity.anonymous and self.settings.auth.accepts_credentials:
            return self._unauthorized("authentication required")
        return Denied("access denied by the registry's access policy")

    def _unauthorized(self, message: str) -> Unauthorized:
        return Unauthorized(
            message, headers={"WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'}
        )

    def _count(self, method: str, result: str) -> None:
        self._metrics.auth_attempts.labels(method, result).inc()
