"""The access log: one line per request, with who asked and what the policy said.

Same fields as aiohttp's `%a "%r" %s %b %Tfs "%{User-Agent}i"`, then `identity=` (an id,
a username's identity key, a certificate CN or an OIDC subject — never a secret) and
`access=` (allow, deny, or - where no decision was needed). The byte count is everything the
response sent, status line and headers included as aiohttp counts them, plus the body bytes
that went out with sendfile past aiohttp's writer (`sent.py`): a blob's line shows its size.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .access.middleware import DECISION, IDENTITY
from .sent import bytes_on_the_wire


class AuditAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        identity = request.get(IDENTITY)
        decision = request.get(DECISION)
        access = "-" if decision is None else ("allow" if decision.allowed else "deny")
        agent = request.headers.get("User-Agent", "-").replace('"', "'")
        label = identity.label if identity is not None else "-"
        sent = bytes_on_the_wire(request, response)
        fields = {
            "remote": request.remote or "-",
            "method": request.method,
            "path": request.path_qs,
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "status": response.status,
            "bytes": sent,
            "duration_s": round(time, 6),
            "user_agent": agent,
            "identity": label,
            "access": access,
        }
        self.logger.info(
            '%s "%s %s %s" %d %d %.6fs "%s" identity=%s access=%s',
            fields["remote"],
            request.method,
            request.path_qs,
            fields["protocol"],
            response.status,
            sent,
            time,
            agent,
            label,
            access,
            extra=fields,
        )
