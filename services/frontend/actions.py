"""A request as a typed action: the router turns method + path into one of these values,
which drive dispatch, the access policy and the metrics labels."""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import NotFound, Unsupported
from ..common.oci import Digest, Reference, RepositoryName, parse_reference

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class ApiBase:
    route_label = "base"


@dataclass(frozen=True, slots=True)
class Catalog:
    route_label = "catalog"


@dataclass(frozen=True, slots=True)
class GetManifest:
    name: RepositoryName
    reference: Reference
    route_label = "manifest"


@dataclass(frozen=True, slots=True)
class GetBlob:
    name: RepositoryName
    digest: Digest
    route_label = "blob"


@dataclass(frozen=True, slots=True)
class ListTags:
    name: RepositoryName
    route_label = "tags"


@dataclass(frozen=True, slots=True)
class Referrers:
    name: RepositoryName
    digest: Digest
    route_label = "referrers"


Action = ApiBase | Catalog | GetManifest | GetBlob | ListTags | Referrers


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
