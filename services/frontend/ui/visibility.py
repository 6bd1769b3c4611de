"""Every visibility decision of the UI goes through here: whether a page shows a
repository, an image or a tag, and whether it offers warm, delete and retry.

The request itself was already decided by the access middleware on its action; this asks
the same policies (`AccessControl.verdict`, the identity the middleware authenticated)
about the other actions a page lists or offers. As for `_catalog`, a listed image is one
whose tags the identity may list (`list-tags`), and the webhook is not asked for listings.
"""

from __future__ import annotations

from aiohttp import web

from ...common.errors import RegistryError
from ...common.oci import RepositoryName
from ...common.routing import Route
from ...common.runtime import RUNTIME
from ..access.middleware import ACCESS, IDENTITY
from ..actions import Action, ListTags
from .catalog import Image, Snapshot
from .state import UI

# As long as the access control remembers a decision (access/control.py).
VISIBLE_TTL_SECS = 30.0


def _route(request: web.Request, action: Action) -> Route | None:
    name = action.repository
    if name is None:
        return None
    try:
        return request.app[RUNTIME].router.resolve(name)
    except RegistryError:
        return None  # decided by the global policy alone, as the middleware does


async def may(request: web.Request, action: Action) -> bool:
    """Would the access policy allow this request's identity `action`?"""
    identity = request.get(IDENTITY)
    if identity is None:  # a request the middleware did not see: nothing is allowed
        return False
    return request.app[ACCESS].verdict(identity, action, _route(request, action)).allowed


async def visible_images(request: web.Request, repository: str, snapshot: Snapshot) -> list[Image]:
    """The images of `repository` whose tags the identity may list. When no rule can tell
    one name from another (no rules in the global policy or the repository's), one answer
    covers them all; otherwise each is decided, and the list is remembered for this
    identity and snapshot for as long as the access control remembers a decision."""
    images = snapshot.of(repository)
    settings = request.app[RUNTIME].settings
    configured = settings.repositories.get(repository)
    policy = configured.access_policy if configured is not None else None
    if not settings.global_.access_policy.rules and not (policy is not None and policy.rules):
        if images and await may(request, ListTags(RepositoryName(images[0].name))):
            return list(images)
        return []
    identity = request.get(IDENTITY)
    remembered = request.app[UI].visible
    key = (identity.cache_key() if identity is not None else None, repository, snapshot.taken_at)
    visible = remembered.get(key)
    if visible is None:
        visible = [i for i in images if await may(request, ListTags(RepositoryName(i.name)))]
        remembered.put(key, visible, weight=8 * len(visible), ttl=VISIBLE_TTL_SECS)
    return visible
