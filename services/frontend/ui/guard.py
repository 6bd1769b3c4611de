"""Cross-site protection for the UI's actions (warm, retry): a browser may send them only
from a page of this registry.

The check of Go's `http.CrossOriginProtection`: a request whose `Sec-Fetch-Site` is
`same-origin` or `none` (typed by the user) passes; any other value is refused. Without
that header (an older browser, or no browser: curl, scripts), an `Origin` must name this
host; a request with neither is not from a browser page and passes. Reads never change
anything, so only actions are checked; deletes use the registry's `DELETE`, which a page
of another origin cannot send without a CORS preflight this registry never grants.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from ...common.errors import Denied

_SAME_SITE_VALUES = frozenset({"same-origin", "none"})


def refuse_cross_site(request: web.Request) -> None:
    """Raise Denied unless the request may come from this registry's own pages."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site.lower() in _SAME_SITE_VALUES:
            return
        raise Denied("cross-site request refused", detail={"sec-fetch-site": fetch_site[:40]})
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower():
        raise Denied("cross-origin request refused", detail={"origin": origin[:200]})
