"""Every visibility decision of the UI goes through here: whether a page shows a
repository, an image or a tag, and whether it offers warm, delete and retry.

The request itself was already decided by the access middleware on its action; this asks
the same policies (`AccessControl.verdict`, the identity the middleware authenticated)
about the other actions a page lists or offers. As for `_catalog`, a listed image is one
whose tags the identity may list (`list-tags`), and the webhook is not asked for listings.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ...common.errors import RegistryError
from ...common.oci import RepositoryName
from ...common.routing import Route
from ...common.runtime import RUNTIME
from ..access.middleware import ACCESS, IDENTITY
from ..actions import Action, ListTags
from .catalog import Image


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


async def visible_images(request: web.Request, images: Sequence[Image]) -> list[Image]:
    """The images whose tags the identity may list. When no rule can tell one name from
    another (no rules in the global policy or the repository's), one answer covers all
    the images of a repository."""
    settings = request.app[RUNTIME].settings
    global_rules = bool(settings.global_.access_policy.rules)
    visible: list[Image] = []
    answers: dict[str, bool] = {}
    for image in images:
        repository = settings.repositories.get(image.repository)
        policy = repository.access_policy if repository is not None else None
        uniform = not global_rules and not (policy is not None and policy.rules)
        allowed = answers.get(image.repository) if uniform else None
        if allowed is None:
            allowed = await may(request, ListTags(RepositoryName(image.name)))
            if uniform:
                answers[image.repository] = allowed
        if allowed:
            visible.append(image)
    return visible
