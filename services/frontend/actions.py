"""A request as a typed action: method + path become one of these values, which drive
dispatch, the access policy (Angos's action names and `request.*` variables) and the
metrics labels. Parsing happens before any handler or policy runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..common.errors import (
    ManifestUnknown,
    NameInvalid,
    NotFound,
    PaginationInvalid,
    TagInvalid,
    Unsupported,
)
from ..common.oci import NAME_RE, Digest, Reference, RepositoryName, Tag, parse_reference

READ_METHODS = frozenset({"GET", "HEAD"})
MAX_PAGE_SIZE = 10_000
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
STATUS_PATHS = ("/healthz", "/readyz", "/metrics")
_NO_QUERY: Mapping[str, str] = {}


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
class ManifestAction(NamedAction):
    reference: Reference
    route_label = "manifest"

    def request_variables(self) -> dict[str, Any]:
        variables = {**NamedAction.request_variables(self), "reference": str(self.reference)}
        if isinstance(self.reference, Digest):
            variables["digest"] = str(self.reference)
        return variables


@dataclass(frozen=True, slots=True)
class GetManifest(ManifestAction):
    name = "get-manifest"


@dataclass(frozen=True, slots=True)
class DeleteManifest(ManifestAction):
    name = "delete-manifest"


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


# -- the web UI and its JSON API (Angos's names, plus ours for what only a cache shows) --------


@dataclass(frozen=True, slots=True)
class UiAsset(Action):
    name = "ui-asset"
    route_label = "ui-asset"
    path: str


@dataclass(frozen=True, slots=True)
class UiConfig(Action):
    name = "ui-config"
    route_label = "ui-config"


@dataclass(frozen=True, slots=True)
class ListRepositories(Action):
    name = "list-repositories"
    route_label = "ui-repositories"


@dataclass(frozen=True, slots=True)
class ListNamespaces(Action):
    """The images cached under one configured repository (`request.repository`)."""

    name = "list-namespaces"
    route_label = "ui-namespaces"
    repository_key: str

    def request_variables(self) -> dict[str, Any]:
        return {"action": self.name, "repository": self.repository_key}


@dataclass(frozen=True, slots=True)
class ListRevisions(NamedAction):
    """The manifests and tags of one image."""

    name = "list-revisions"
    route_label = "ui-revisions"


@dataclass(frozen=True, slots=True)
class ViewManifest(GetManifest):
    """One manifest in the UI: decided as `get-manifest`, counted apart from pulls."""

    route_label = "ui-manifest"


@dataclass(frozen=True, slots=True)
class CacheStatus(Action):
    """Hit ratio, upstream health, usage, the queue, recent pulls (ours)."""

    name = "cache-status"
    route_label = "ui-cache-status"


@dataclass(frozen=True, slots=True)
class ListJobs(Action):
    name = "list-jobs"
    route_label = "ui-jobs"
    n: int | None = None
    after: str | None = None

    def request_variables(self) -> dict[str, Any]:
        variables: dict[str, Any] = {"action": self.name, "queue": "cache"}
        if self.n is not None:
            variables["n"] = self.n
        if self.after is not None:
            variables["after"] = self.after
        return variables


@dataclass(frozen=True, slots=True)
class ListFailedJobs(ListJobs):
    name = "list-failed-jobs"
    route_label = "ui-failed-jobs"


@dataclass(frozen=True, slots=True)
class RetryJob(Action):
    name = "retry-job"
    route_label = "ui-retry-job"
    key: str

    def request_variables(self) -> dict[str, Any]:
        return {"action": self.name, "queue": "cache"}


@dataclass(frozen=True, slots=True)
class WarmImage(NamedAction):
    """Fetch a tag with its platforms into the cache (ours)."""

    name = "warm-image"
    route_label = "ui-warm"
    reference: Tag
    platforms: tuple[str, ...] = ()

    def request_variables(self) -> dict[str, Any]:
        return {**NamedAction.request_variables(self), "reference": self.reference.value}


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
    if method == "DELETE" and isinstance(action, GetManifest):
        # The one write a mirror takes: the access policy decides (`delete-manifest`).
        return DeleteManifest(action.namespace, action.reference)
    if method not in READ_METHODS:
        if method in WRITE_METHODS:
            raise _push_refused(f"{method} {action.route_label}")
        raise Unsupported(f"method {method} is not allowed")
    return action


def parse_request(
    method: str, path: str, match_info: Mapping[str, str], query: Mapping[str, str] = _NO_QUERY
) -> Action:
    """Any request of the frontend as its action; a RegistryError when it is none."""
    if UI_ROUTE_KEYS & match_info.keys():
        return parse_ui_action(method, match_info, query)
    if path == "/v2" or path.startswith("/v2/"):
        return parse_action(method, match_info.get("tail", ""))
    if path in STATUS_PATHS:
        return parse_status_action(method, path)
    raise NotFound("no such route", detail={"path": path[:300]})


def parse_status_action(method: str, path: str) -> Action:
    if method not in READ_METHODS:
        raise Unsupported(f"method {method} is not allowed")
    if path == "/healthz":
        return Healthz()
    if path == "/readyz":
        return Readyz()
    return Metrics()


def _manifest_reference(text: str) -> Reference:
    """A digest must be well formed (400); a tag that cannot exist is just not there (404),
    as the conformance suite's `.INVALID_MANIFEST_NAME` expects."""
    try:
        return parse_reference(text)
    except TagInvalid:
        raise ManifestUnknown("manifest unknown", detail={"reference": text[:200]}) from None


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
            return GetManifest(name, _manifest_reference(rest))
        if keyword == "/blobs/":
            return GetBlob(name, Digest.parse(rest))
        return Referrers(name, Digest.parse(rest))
    raise NotFound("no such route", detail={"path": "/v2/" + tail[:300]})


# -- the web UI's routes -------------------------------------------------------------------

# The match_info keys of the UI's routes (registered only with `[ui] enabled`; see
# frontend/ui/routes.py): which UI route matched, and its parts of the path.
UI_ROUTE_KEYS = frozenset({"ui_asset", "ui_repository", "ui_page", "ui_api", "ui_namespace"})
_JOB_KEY_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_PLATFORM_RE = re.compile(r"^[a-z0-9._-]{1,40}/[a-z0-9._-]{1,40}(/[a-z0-9._-]{1,40})?$")


def parse_ui_action(method: str, match_info: Mapping[str, str], query: Mapping[str, str]) -> Action:
    """The UI's pages (`/`, `/<repository>`, `/<repository>/<image>`, `...:<tag>`,
    `...@<digest>`, `/_cache`), its assets, and its JSON API under `/v2/_angos/` and
    `/v2/<name>/_angos/`."""
    if "ui_api" in match_info:
        return _parse_ui_api(method, match_info.get("ui_namespace"), match_info["ui_api"], query)
    if method not in READ_METHODS:
        raise Unsupported(f"method {method} is not allowed")
    if "ui_asset" in match_info:
        return UiAsset(match_info["ui_asset"])
    if "ui_repository" in match_info:
        return ListNamespaces(match_info["ui_repository"])
    page = match_info["ui_page"]
    if page == "":
        return ListRepositories()
    if page == "_cache":
        return CacheStatus()
    if "@" in page:
        name, _, digest = page.rpartition("@")
        return ViewManifest(RepositoryName.parse(name), Digest.parse(digest))
    head, _, last = page.rpartition("/")
    if ":" in last:
        image, _, tag = last.partition(":")
        name = f"{head}/{image}" if head else image
        return ViewManifest(RepositoryName.parse(name), Tag.parse(tag))
    return ListRevisions(RepositoryName.parse(page))


def _parse_ui_api(
    method: str, namespace: str | None, tail: str, query: Mapping[str, str]
) -> Action:
    reading = method in READ_METHODS
    if namespace is not None:
        name = RepositoryName.parse(namespace)
        kind, _, rest = tail.partition("/")
        if tail == "revisions/list" and reading:
            return ListRevisions(name)
        if kind == "manifests" and rest and reading:
            return ViewManifest(name, parse_reference(rest))
        if kind == "warm" and rest and method == "POST":
            platforms = tuple(p for p in query.get("platform", "").split(",") if p)
            if not all(_PLATFORM_RE.match(p) for p in platforms):
                raise NameInvalid("platforms are os/architecture[/variant], comma-separated")
            return WarmImage(name, Tag.parse(rest), platforms)
    elif tail == "ui/config" and reading:
        return UiConfig()
    elif tail == "repositories/list" and reading:
        return ListRepositories()
    elif tail == "namespaces/list" and reading:
        repository = query.get("repository", "")
        if not NAME_RE.match(repository):
            raise NameInvalid("?repository= names a configured repository")
        return ListNamespaces(repository)
    elif tail == "cache/status" and reading:
        return CacheStatus()
    elif tail in ("jobs/list", "jobs/failed") and reading:
        n, after = _ui_page_size(query.get("n")), query.get("after")
        if after is not None and not _JOB_KEY_RE.match(after):
            raise PaginationInvalid("after is the key of a job")
        return ListJobs(n, after) if tail == "jobs/list" else ListFailedJobs(n, after)
    elif tail == "jobs/failed" and method == "POST":
        key = query.get("key", "")
        if not _JOB_KEY_RE.match(key):
            raise NotFound("no such failed job", detail={"key": key[:100]})
        return RetryJob(key)
    if tail in UI_API_PATHS:
        raise Unsupported(f"method {method} is not allowed")
    raise NotFound("no such route", detail={"path": tail[:300]})


# The global API paths (for a 405 instead of a 404 on a wrong method).
UI_API_PATHS = frozenset(
    {
        "ui/config",
        "repositories/list",
        "namespaces/list",
        "cache/status",
        "jobs/list",
        "jobs/failed",
    }
)


def _ui_page_size(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > MAX_PAGE_SIZE:
        raise PaginationInvalid(
            f"n must be an integer from 0 to {MAX_PAGE_SIZE}", detail={"n": text[:50]}
        )
    return int(text)
