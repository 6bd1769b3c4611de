"""Authorization webhooks (`[auth.webhook.<name>]`), asked after the access policy allowed.

As Angos does it: a GET to the webhook's URL with the request and identity in
`X-Forwarded-*` and `X-Registry-*` headers (and the configured `forward_headers`). A 2xx
answer allows and a 401/403 denies, both remembered for `cache_ttl`; anything else — another
status, a timeout, a refused connection — denies this request only (fail closed).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

import aiohttp
from aiohttp import BasicAuth

from ...common.config import AuthWebhook
from ...common.lru import LruCache
from ...common.metrics import Metrics
from ...common.tlsclient import client_context
from ..actions import Action
from .identity import Identity

log = logging.getLogger(__name__)

CACHE_MAX_BYTES = 8 * 1024 * 1024


class WebhookAuthorizer:
    def __init__(
        self,
        webhooks: Mapping[str, AuthWebhook],
        session: aiohttp.ClientSession,
        metrics: Metrics,
    ):
        self._webhooks = dict(webhooks)
        self._session = session
        self._metrics = metrics
        self._answers: LruCache[bool] = LruCache(CACHE_MAX_BYTES)
        self._ssl = {name: _ssl_context(hook) for name, hook in self._webhooks.items()}

    async def allows(
        self,
        name: str,
        action: Action,
        identity: Identity,
        request_info: Mapping[str, str],
        client_headers: Mapping[str, list[str]],
    ) -> bool:
        hook = self._webhooks[name]
        headers = _headers(action, identity, request_info)
        forwarded = tuple(
            (header, tuple(client_headers.get(header.lower(), [])))
            for header in hook.forward_headers
        )
        key = (
            name,
            identity.cache_key(),
            tuple(sorted(action.request_variables().items(), key=str)),
            forwarded,
        )
        cached = self._answers.get(key)
        if cached is not None:
            self._count(name, "cached_allow" if cached else "cached_deny")
            return cached
        multi = list(headers)
        for header, values in forwarded:
            multi.extend((header, value) for value in values)
        if hook.bearer_token is not None:
            multi.append(("Authorization", f"Bearer {hook.bearer_token}"))
        auth = BasicAuth(*hook.basic_auth) if hook.basic_auth is not None else None
        try:
            async with self._session.get(
                hook.url,
                headers=multi,
                auth=auth,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=hook.timeout_ms / 1000),
                ssl=self._ssl[name],
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            log.warning("authorization webhook %s unreachable: %s (denied)", name, error)
            self._count(name, "transport_error")
            return False
        if 200 <= status < 300 or status in (401, 403):
            allowed = status < 300
            if hook.cache_ttl_secs > 0:
                self._answers.put(key, allowed, ttl=hook.cache_ttl_secs)
            self._count(name, "allow" if allowed else "deny")
            return allowed
        log.warning("authorization webhook %s answered %d (denied, not cached)", name, status)
        self._count(name, "unavailable")
        return False

    def _count(self, name: str, result: str) -> None:
        self._metrics.webhook_decisions.labels(name, result).inc()


def _headers(action: Action, identity: Identity, info: Mapping[str, str]) -> list[tuple[str, str]]:
    variables = action.request_variables()
    headers = {
        "X-Forwarded-Method": info["method"],
        "X-Forwarded-Proto": info["scheme"],
        "X-Forwarded-Host": info["host"],
        "X-Forwarded-Uri": info["uri"],
        "X-Registry-Action": action.name,
    }
    if identity.client_ip:
        headers["X-Forwarded-For"] = identity.client_ip
    for variable, header in (
        ("namespace", "X-Registry-Namespace"),
        ("reference", "X-Registry-Reference"),
        ("digest", "X-Registry-Digest"),
    ):
        if variable in variables:
            headers[header] = str(variables[variable])
    if identity.username:
        headers["X-Registry-Username"] = identity.username
    if identity.id:
        headers["X-Registry-Identity-ID"] = identity.id
    if identity.oidc_provider:
        headers["X-Registry-OIDC-Provider"] = identity.oidc_provider
        subject = (identity.oidc_claims or {}).get("sub")
        if isinstance(subject, str):
            headers["X-Registry-OIDC-Subject"] = subject
    pairs = list(headers.items())
    # One header per value, as Angos sends them.
    pairs += [("X-Registry-Certificate-CN", name) for name in identity.common_names]
    pairs += [("X-Registry-Certificate-O", name) for name in identity.organizations]
    return pairs


def _ssl_context(hook: AuthWebhook) -> ssl.SSLContext | bool:
    context = client_context(
        hook.server_ca_bundle, hook.client_certificate_bundle, hook.client_private_key
    )
    return context if context is not None else True
