"""Loading who gets in: `[server.tls]`, `[auth.*]`, access policies and trusted proxies.

Every key here decides who gets in, so every one is implemented or refused: a file that
cannot be read, a hash that is not Argon2, a rule that does not compile or names what a
policy does not offer, a webhook nobody defined — each stops start-up naming its key.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import argon2

from ..cel import RuleInvalid, compile_rule
from .reader import ConfigError, Table
from .settings import (
    AccessPolicy,
    AuthSettings,
    AuthWebhook,
    BasicIdentity,
    IPv4Network,
    IPv6Network,
    OidcProvider,
    TlsSettings,
    default_of,
)

ACCESS_RULE_VARIABLES = ("identity", "request")
ACCESS_RULE_FUNCTIONS = ()
# What `identity.*` and `request.*` offer (Angos's names): a rule naming anything else is a
# typo that would never match, refused at start-up.
IDENTITY_FIELDS = frozenset({"id", "username", "client_ip", "certificate", "oidc"})
CERTIFICATE_FIELDS = frozenset({"common_names", "organizations"})
REQUEST_FIELDS = frozenset(
    {"action", "namespace", "digest", "reference", "n", "last", "artifact_type", "repository"}
)
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_FIELD = re.compile(r"\b(identity\.certificate|identity|request)\.([A-Za-z_]\w*)")
_KNOWN_FIELDS = {
    "identity": IDENTITY_FIELDS,
    "identity.certificate": CERTIFICATE_FIELDS,
    "request": REQUEST_FIELDS,
}


def _unknown_fields(text: str) -> list[str]:
    code = _STRING_LITERAL.sub("''", text)
    return [
        f"{variable}.{name}"
        for variable, name in _FIELD.findall(code)
        if name not in _KNOWN_FIELDS[variable]
    ]


GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_REQUIRED_CLAIMS = ("repository", "actor")


def readable_file(table: Table, name: str, *, required: bool = False) -> Path | None:
    path = table.path(name)
    if path is None:
        if required:
            raise ConfigError(table.key(name), None, "a path to a readable file (required)")
        return None
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise ConfigError(
            table.key(name), str(path), f"a readable file ({error.strerror or error})"
        ) from None
    return path


def parse_tls(table: Table | None) -> TlsSettings | None:
    if table is None:
        return None
    certificate = readable_file(table, "server_certificate_bundle", required=True)
    key = readable_file(table, "server_private_key", required=True)
    client_ca = readable_file(table, "client_ca_bundle")
    client_auth = table.string("client_auth", default_of(TlsSettings, "client_auth"))
    if client_auth not in ("optional", "required"):
        raise ConfigError(table.key("client_auth"), client_auth, '"optional" or "required"')
    if client_auth == "required" and client_ca is None:
        raise ConfigError(
            table.key("client_auth"), client_auth, 'client_ca_bundle set with "required"'
        )
    table.finish(strict=True)
    assert certificate is not None and key is not None
    settings = TlsSettings(certificate, key, client_ca, client_auth)
    _check_certificate_pair(table, settings)
    return settings


def _check_certificate_pair(table: Table, settings: TlsSettings) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.server_certificate_bundle, settings.server_private_key)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            table.key("server_certificate_bundle"),
            str(settings.server_certificate_bundle),
            f"a PEM certificate chain matching server_private_key ({error})",
        ) from None
    if settings.client_ca_bundle is not None:
        try:
            context.load_verify_locations(settings.client_ca_bundle)
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                table.key("client_ca_bundle"),
                str(settings.client_ca_bundle),
                f"a PEM bundle of CA certificates ({error})",
            ) from None


def parse_access_policy(table: Table | None) -> AccessPolicy | None:
    if table is None:
        return None
    default_allow = table.boolean("default_allow", None)
    default = table.string("default")
    if default_allow is not None and default is not None:
        raise ConfigError(
            table.key("default"), default, "either default or default_allow, not both"
        )
    legacy = default_allow is not None
    if default is not None:
        if default not in ("allow", "deny"):
            raise ConfigError(table.key("default"), default, '"allow" or "deny"')
        default_allow = default == "allow"
    raw_rules = table.raw("rules")
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list) or not all(isinstance(r, str) for r in raw_rules):
        raise ConfigError(table.key("rules"), raw_rules, "a list of CEL expressions")
    rules = []
    for index, text in enumerate(raw_rules):
        key = f"{table.key('rules')}[{index}]"
        try:
            rules.append(compile_rule(text, key, ACCESS_RULE_VARIABLES, ACCESS_RULE_FUNCTIONS))
        except RuleInvalid as error:
            raise ConfigError(key, text, f"a valid CEL rule ({error})") from None
        unknown = _unknown_fields(text)
        if unknown:
            raise ConfigError(
                key, text, f"a rule naming only fields that exist (unknown: {', '.join(unknown)})"
            )
    table.finish(strict=True)
    return AccessPolicy(
        default_allow=bool(default_allow), rules=tuple(rules), legacy_default_allow=legacy
    )


def parse_trusted_proxies(table: Table) -> tuple[IPv4Network | IPv6Network, ...]:
    value = table.raw("trusted_proxies")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(table.key("trusted_proxies"), value, "a list of IP addresses or CIDRs")
    networks = []
    for index, text in enumerate(value):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(
                f"{table.key('trusted_proxies')}[{index}]", text, "an IP address or CIDR"
            ) from None
    return tuple(networks)


def parse_auth(table: Table | None) -> AuthSettings:
    if table is None:
        return AuthSettings()
    identities = _parse_identities(table.table("identity"))
    oidc = _parse_oidc(table.table("oidc"))
    webhooks = _parse_webhooks(table.table("webhook"))
    if table.has("token_service"):
        raise ConfigError(
            table.key("token_service"),
            "…",
            "no [auth.token_service]: this registry does not issue registry tokens "
            "(use Basic identities, mTLS or OIDC); it is refused rather than ignored",
        )
    table.finish(strict=True)
    usernames = {identity.username for identity in identities}
    for provider in oidc:
        if provider.name in usernames:
            raise ConfigError(
                f"auth.oidc.{provider.name}",
                provider.name,
                "a provider name that is no identity's username (Basic logins would clash)",
            )
    return AuthSettings(identities=identities, oidc=oidc, webhooks=webhooks)


def _parse_identities(table: Table | None) -> tuple[BasicIdentity, ...]:
    if table is None:
        return ()
    identities: list[BasicIdentity] = []
    seen: dict[str, str] = {}
    for identity_id, _ in list(table.items()):
        entry = table.table(identity_id)
        assert entry is not None
        username = entry.string("username", required=True)
        password = entry.string("password", required=True)
        if not _is_argon2_hash(password):
            raise ConfigError(
                entry.key("password"),
                password,
                "an Argon2 hash in PHC form ($argon2id$v=19$m=...,t=...,p=...$salt$hash), "
                "e.g. from: python -c \"import argon2; print(argon2.PasswordHasher().hash('pw'))\"",
            )
        if username in seen:
            raise ConfigError(
                entry.key("username"),
                username,
                f"a username no other identity uses (also auth.identity.{seen[username]})",
            )
        seen[username] = identity_id
        entry.finish(strict=True)
        identities.append(BasicIdentity(identity_id, username, password))
    table.finish(strict=True)
    return tuple(identities)


def _is_argon2_hash(text: str) -> bool:
    if not text.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        return False
    try:
        argon2.extract_parameters(text)
    except Exception:
        return False
    return True


def _strings(table: Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = table.raw(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(table.key(name), value, "a list of strings")
    return tuple(value)


def _https_url(table: Table, name: str, *, required: bool = False) -> str | None:
    url = table.string(name, required=required)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(table.key(name), url, "an http:// or https:// URL")
    return str(url)


def _parse_oidc(table: Table | None) -> tuple[OidcProvider, ...]:
    if table is None:
        return ()
    providers = []
    d = OidcProvider
    for name, _ in list(table.items()):
        entry = table.table(name)
        assert entry is not None
        kind = entry.string("provider")
        if kind not in (None, "generic", "github"):
            raise ConfigError(entry.key("provider"), kind, '"generic" or "github"')
        github = kind == "github"
        issuer = _https_url(entry, "issuer", required=not github) or GITHUB_ISSUER
        required_claims = _strings(
            entry, "required_claims", GITHUB_REQUIRED_CLAIMS if github else ()
        )
        algorithms = _strings(entry, "allowed_algorithms", default_of(d, "allowed_algorithms"))
        supported = {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512"}
        unsupported = set(algorithms) - supported
        if unsupported or not algorithms:
            raise ConfigError(
                entry.key("allowed_algorithms"),
                list(algorithms),
                f"a non-empty list of {', '.join(sorted(supported))}",
            )
        providers.append(
            OidcProvider(
                name=name,
                issuer=issuer,
                jwks_uri=_https_url(entry, "jwks_uri"),
                required_audience=entry.string("required_audience"),
                required_claims=required_claims,
                clock_skew_tolerance_secs=entry.number(
                    "clock_skew_tolerance", default_of(d, "clock_skew_tolerance_secs")
                ),
                jwks_refresh_interval_secs=entry.number(
                    "jwks_refresh_interval",
                    default_of(d, "jwks_refresh_interval_secs"),
                    minimum=1.0,
                ),
                allowed_algorithms=algorithms,
                http_request_timeout_secs=entry.number(
                    "http_request_timeout_secs",
                    default_of(d, "http_request_timeout_secs"),
                    minimum=0.1,
                ),
                server_ca_bundle=readable_file(entry, "server_ca_bundle"),
            )
        )
        entry.finish(strict=True)
    table.finish(strict=True)
    return tuple(providers)


def _parse_webhooks(table: Table | None) -> Mapping[str, AuthWebhook]:
    if table is None:
        return {}
    webhooks: dict[str, AuthWebhook] = {}
    d = AuthWebhook
    for name, _ in list(table.items()):
        entry = table.table(name)
        assert entry is not None
        url = _https_url(entry, "url", required=True)
        assert url is not None
        if not entry.has("timeout_ms"):
            raise ConfigError(entry.key("timeout_ms"), None, "milliseconds (this key is required)")
        basic = entry.table("basic_auth")
        basic_auth = None
        if basic is not None:
            basic_auth = (
                basic.string("username", required=True),
                basic.string("password", required=True),
            )
            basic.finish(strict=True)
        certificate = readable_file(entry, "client_certificate_bundle")
        key = readable_file(entry, "client_private_key")
        if (certificate is None) != (key is None):
            raise ConfigError(
                entry.key("client_certificate_bundle"),
                str(certificate),
                "client_certificate_bundle and client_private_key set together",
            )
        webhooks[name] = AuthWebhook(
            name=name,
            url=url,
            timeout_ms=entry.integer("timeout_ms", 0, minimum=1),
            bearer_token=entry.string("bearer_token"),
            basic_auth=basic_auth,
            client_certificate_bundle=certificate,
            client_private_key=key,
            server_ca_bundle=readable_file(entry, "server_ca_bundle"),
            forward_headers=_strings(entry, "forward_headers", default_of(d, "forward_headers")),
            cache_ttl_secs=entry.number("cache_ttl", default_of(d, "cache_ttl_secs")),
        )
        entry.finish(strict=True)
    table.finish(strict=True)
    return webhooks


def check_webhook_reference(key: str, name: str | None, auth: AuthSettings) -> None:
    if name and name not in auth.webhooks:
        raise ConfigError(key, name, "the name of an [auth.webhook.<name>] table")
