"""TLS for this registry's own outgoing requests (upstreams, webhooks, OIDC issuers)."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    ca_bundle: Path | None,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> ssl.SSLContext | None:
    """A context that trusts `ca_bundle` (else the system's CAs) and presents the client
    certificate when one is given; None when nothing differs from aiohttp's default."""
    if ca_bundle is None and certificate is None:
        return None
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    if certificate is not None and private_key is not None:
        context.load_cert_chain(str(certificate), str(private_key))
    return context
