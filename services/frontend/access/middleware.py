"""The one place the access decision is made, before any handler runs."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from ...common.errors import NameInvalid, NameUnknown
from ...common.routing import Route
from ...common.runtime import RUNTIME
from ..actions import MAX_PAGE_SIZE, Action, Catalog, ListTags, Referrers, parse_request
from .control import AccessControl, Decision
from .identity import Identity

ACCESS = web.AppKey("access", AccessControl)
ACTION = web.RequestKey("action", Action)
IDENTITY = web.RequestKey("identity", Identity)
DECISION = web.RequestKey("decision", Decision)
# The Route of a named action, or the error that resolving its name raised.
ROUTE = web.RequestKey("route", object)


def _with_query(action: Action, request: web.Request) -> Action:
    """The query's part of the action: `request.n` and `request.last` of listings (a bad `n`
    is the handler's 400), `request.artifact_type` of referrers."""
    if isinstance(action, Referrers):
        artifact_type = request.query.get("artifactType") or None
        return Referrers(action.namespace, action.digest, artifact_type=artifact_type)
    if not isinstance(action, Catalog | ListTags):
        return action
    text = request.query.get("n")
    n = int(text) if text and text.isascii() and text.isdigit() and len(text) <= 6 else None
    if n is not None and n > MAX_PAGE_SIZE:
        n = None
    last = request.query.get("last")
    if isinstance(action, ListTags):
        return ListTags(action.namespace, n=n, last=last)
    return Catalog(n=n, last=last)


def route_of(request: web.Request) -> Route:
    """The route the access decision was made for; a name no repository covers is unknown."""
    route = request.get(ROUTE)
    if isinstance(route, Route):
        return route
    if isinstance(route, NameInvalid | NameUnknown):
        raise route
    raise NameUnknown("repository name not known to registry")


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    action = _with_query(
        parse_request(request.method, request.path, request.match_info, request.query), request
    )
    request[ACTION] = action
    route: Route | None = None
    if action.repository is not None:
        try:
            route = request.app[RUNTIME].router.resolve(action.repository, request.query.get("ns"))
            request[ROUTE] = route
        except (NameUnknown, NameInvalid) as error:
            # Decided by the global policy alone; the handler answers the error after.
            request[ROUTE] = error
    identity = await access.authenticate(request)
    request[IDENTITY] = identity
    decision = await access.decide(request, identity, action, route)
    request[DECISION] = decision
    if not decision.allowed:
        raise access.refusal(identity)
    return await handler(request)
