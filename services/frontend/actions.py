"""A request as a typed action: method + path become one of these values, which drive
dispatch, the access policy (Angos's action names and `request.*` variables) and the
metrics labels. Parsing happens before any handler or policy runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..common.errors import NotFound, Unsupported
from ..common.oci import Digest, Reference, RepositoryName, parse_reference

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
STATUS_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass(frozen=True, slots=True)
class Action:
    name: ClassVar[str]  # Angos's action name (`request.action` in rules, the audit log)
    route_label: ClassVar[str]  # the metrics label

    @property
    def repository(self) -> RepositoryName | None:
        """The repository name the action is about, when it is about one."""
        return None

    def request_variables(self) -> dict[str, Any]:
        """`request.*` for access rules; optional fields are absent, as in Angos."""
        return {"action": self.name}


@dataclass(frozen=True, slots=True)
class NamedAction(Action):
    namespace: RepositoryName

    @property
    def repository(self) -> RepositoryName | None:
        return self.namespace

    def request_variables(self) -> dict[str, Any]:
        return {"action": self.name, "namespace": self.namespace.value}


# -- the OCI distribution API ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiBase(Action):
    name = "get-api-version"
    route_label = "base"


@dataclass(frozen=True, slots=True)
class Catalog(Action):
    name = "list-catalog"
    route_label = "catalog"
    n: int | None = None
    last: str | None = None

    def request_variables(self) -> dict[str, Any]:
        return _with_paging({"action": self.name}, self.n, self.last)


@dataclass(frozen=True, slots=True)
class GetManifest(NamedAction):
    reference: Reference
    name = "get-manifest"
    route_label = "manifest"

    def request_variables(self) -> dict[str, Any]:
        variables = {**NamedAction.request_variables(self), "reference": str(self.reference)}
        if isinstance(self.reference, Digest):
            variables["digest"] = str(self.reference)
        return variables


@dataclass(frozen=True, slots=True)
class DeleteManifest(NamedAction):
    reference: Reference
    name = "delete-manifest"
    route_label = "manifest"

    def request_variables(self) -> dict[str, Any]:
        variables = {**NamedAction.request_variables(self), "reference": str(self.reference)}
        if isinstance(self.reference, Digest):
            variables["digest"] = str(self.reference)
        return variables


@dataclass(frozen=True, slots=True)
class GetBlob(NamedAction):
    digest: Digest
    name = "get-blob"
    route_label = "blob"

    def request_variables(self) -> dict[str, Any]:
        return {**NamedAction.request_variables(self), "digest": str(self.digest)}


@dataclass(frozen=True, slots=True)
class ListTags(NamedAction):
    name = "list-tags"
    route_label = "tags"
    n: int | None = None
    last: str | None = None

    def request_variables(self) -> dict[str, Any]:
        return _with_paging(NamedAction.request_variables(self), self.n, self.last)


@dataclass(frozen=True, slots=True)
class Referrers(NamedAction):
    digest: Digest
    name = "get-referrers"
    route_label = "referrers"
    artifact_type: str | None = None

    def request_variables(self) -> dict[str, Any]:
        variables = {**NamedAction.request_variables(self), "digest": str(self.digest)}
        if self.artifact_type is not None:
            variables["artifact_type"] = self.artifact_type
        return variables


# -- health and metrics -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Healthz(Action):
    name = "healthz"
    route_label = "healthz"


@dataclass(frozen=True, slots=True)
class Readyz(Action):
    name = "readyz"
    route_label = "readyz"


@dataclass(frozen=True, slots=True)
class Metrics(Action):
    name = "metrics"
    route_label = "metrics"


def _with_paging(variables: dict[str, Any], n: int | None, last: str | None) -> dict[str, Any]:
    if n is not None:
        variables["n"] = n
    if last is not None:
        variables["last"] = last
    return variables


def _push_refused(what: str) -> Unsupported:
    return Unsupported(
        f"{what} is not supported: this registry is a read-only pull-through mirror",
    )


def parse_action(method: str, tail: str) -> Action:
    """`tail` is the path after `/v2/`. Raises a RegistryError for anything else."""
    if tail in ("", "/"):
        action: Action = ApiBase()
    elif tail == "_catalog":
        action = Catalog()
    else:
        action = _parse_named(method, tail)
    if method not in READ_METHODS:
        if method in WRITE_METHODS:
            raise _push_refused(f"{method} {action.route_label}")
        raise Unsupported(f"method {method} is not allowed")
    return action


def parse_status_action(method: str, path: str) -> Action:
    if method not in READ_METHODS:
        raise Unsupported(f"method {method} is not allowed")
    if path == "/healthz":
        return Healthz()
    if path == "/readyz":
        return Readyz()
    return Metrics()


def _parse_named(method: str, tail: str) -> Action:
    # The name may contain slashes, so split on the *last* route keyword.
    for keyword in ("/manifests/", "/blobs/uploads", "/blobs/", "/tags/list", "/referrers/"):
        index = tail.rfind(keyword)
        if index <= 0:
            continue
        name_text, rest = tail[:index], tail[index + len(keyword) :]
        if keyword == "/blobs/uploads":
            if rest == "" or rest.startswith("/"):
                raise _push_refused("blob upload")
            continue
        if keyword == "/tags/list":
            if rest:
                continue
            return ListTags(RepositoryName.parse(name_text))
        if not rest or "/" in rest:
            continue
        name = RepositoryName.parse(name_text)
        if keyword == "/manifests/":
            return GetManifest(name, parse_reference(rest))
        if keyword == "/blobs/":
            return GetBlob(name, Digest.parse(rest))
        return Referrers(name, Digest.parse(rest))
    raise NotFound("no such route", detail={"path": "/v2/" + tail[:300]})
