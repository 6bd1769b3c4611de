"""Who is asking: the identity a request proved, and its CEL view (`identity.*`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    method: str = "anonymous"  # basic, oidc, mtls, anonymous
    id: str | None = None  # the [auth.identity.<id>] key
    username: str | None = None
    client_ip: str | None = None
    common_names: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    oidc_provider: str | None = None
    oidc_claims: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.method == "anonymous" and not self.common_names

    def variables(self) -> dict[str, Any]:
        """`identity` as access rules see it (Angos: optional fields are null)."""
        oidc = None
        if self.oidc_provider is not None:
            oidc = {"provider_name": self.oidc_provider, "claims": dict(self.oidc_claims or {})}
        return {
            "id": self.id,
            "username": self.username,
            "client_ip": self.client_ip,
            "certificate": {
                "common_names": list(self.common_names),
                "organizations": list(self.organizations),
            },
            "oidc": oidc,
        }

    def cache_key(self) -> tuple[Any, ...]:
        """Everything a rule can see, hashable (decisions are cached by it)."""
        claims = (
            json.dumps(self.oidc_claims, sort_keys=True, default=str) if self.oidc_claims else None
        )
        return (
            self.id,
            self.username,
            self.client_ip,
            self.common_names,
            self.organizations,
            self.oidc_provider,
            claims,
        )

    @property
    def label(self) -> str:
        """For the audit log: who, never a secret."""
        if self.id is not None:
            return f"id:{self.id}"
        if self.oidc_provider is not None:
            subject = (self.oidc_claims or {}).get("sub", "?")
            return f"oidc:{self.oidc_provider}:{subject}"
        if self.common_names:
            return f"cert:{self.common_names[0]}"
        return "anonymous"
