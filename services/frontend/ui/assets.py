"""The UI's static files (CSS, JavaScript, icon), installed with the package and served by
the registry itself from memory: no CDN, no build step, a few kilobytes in all.

Each is read once at start-up; its ETag is a hash of its bytes, and page links carry the
same hash (`?v=`), so a browser keeps a file until the registry serves a new one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ...common.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a hash of the bytes

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class Assets:
    def __init__(self, folder: Path = STATIC_DIR):
        self._files: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            content_type = CONTENT_TYPES.get(path.suffix)
            if path.is_file() and content_type is not None:
                body = path.read_bytes()
                version = hashlib.sha256(body).hexdigest()[:16]
                self._files[path.name] = Asset(body, content_type, version)

    @property
    def names(self) -> list[str]:
        return sorted(self._files)

    def url(self, name: str) -> str:
        """The path of an asset, with its version for caching."""
        return f"/_ui/static/{name}?v={self._files[name].version}"

    def response(self, request: web.Request, name: str) -> web.Response:
        asset = self._files.get(name)
        if asset is None:
            raise NotFound("no such asset", detail={"asset": name[:100]})
        headers = {
            "ETag": asset.etag,
            "Cache-Control": (
                "public, max-age=31536000, immutable"
                if request.query.get("v") == asset.version
                else "no-cache"
            ),
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, headers={**headers, "Content-Type": asset.content_type}
        )
