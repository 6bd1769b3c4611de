"""Where does a request name go? Turns a client's repository name into a `Route`.

Rules, in order:
1. `?ns=<host>` (containerd mirrors): the repository whose `namespace` is that host, with the
   whole name forwarded; an `ns` that no repository serves is NAME_UNKNOWN;
2. the longest configured repository key that is a whole-segment prefix of the name;
3. `[global] default_repository`, with the whole name forwarded (Docker's registry-mirrors
   sends `library/nginx` with no prefix and no `ns`);
4. otherwise NAME_UNKNOWN.
Under a Docker Hub repository a one-segment name is Docker Hub's implicit `library/` name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import RepositorySettings, UpstreamSettings
from .errors import NameInvalid, NameUnknown
from .oci import NAME_MAX_LENGTH, NAME_RE, RepositoryName


@dataclass(frozen=True, slots=True)
class Route:
    repository: RepositorySettings
    # The name below the repository, as the upstream knows it (without the URL's own path).
    remote_name: str

    @property
    def storage_name(self) -> str:
        """One canonical name per image, whichever way the client addressed it."""
        return (
            f"{self.repository.name}/{self.remote_name}"
            if self.remote_name
            else self.repository.name
        )

    def upstream_name(self, upstream: UpstreamSettings) -> str:
        prefix = upstream.namespace_path
        if prefix and self.remote_name:
            return f"{prefix}/{self.remote_name}"
        return prefix or self.remote_name


class Router:
    def __init__(
        self,
        repositories: Mapping[str, RepositorySettings],
        default_repository: str | None = None,
    ):
        self.reconfigure(repositories, default_repository)

    def reconfigure(
        self, repositories: Mapping[str, RepositorySettings], default_repository: str | None
    ) -> None:
        """Route by new settings from the next request on (a live reload)."""
        by_namespace = {r.namespace: r for r in repositories.values() if r.namespace}
        # Longest key first, so that "a/b" wins over "a" for "a/b/c".
        by_prefix = sorted(repositories.values(), key=lambda r: len(r.name), reverse=True)
        default = repositories.get(default_repository) if default_repository else None
        # One assignment each: a request sees the old tables or the new ones, never a mix
        # that would matter (each lookup reads one table).
        self._repositories = dict(repositories)
        self._by_namespace = by_namespace
        self._by_prefix = by_prefix
        self._default = default

    def resolve(self, name: RepositoryName, namespace: str | None = None) -> Route:
        if namespace:
            repository = self._by_namespace.get(namespace.lower())
            if repository is None:
                # Never another registry's content under a name the client trusts: an `ns`
                # no repository serves is unknown, not Docker Hub by default.
                raise NameUnknown(
                    "no repository of this registry serves that namespace",
                    detail={"namespace": namespace[:200]},
                )
            return self._route(repository, name.value)
        repository = self.owner(name.value)
        if repository is not None:
            return self._route(repository, name.value[len(repository.name) + 1 :])
        if self._default is not None:
            return self._route(self._default, name.value)
        raise NameUnknown(
            "repository name not known to registry: no configured repository matches",
            detail={"name": name.value},
        )

    def owner(self, name: str) -> RepositorySettings | None:
        """The repository whose key is the longest whole-segment prefix of `name`."""
        for repository in self._by_prefix:
            if name == repository.name or name.startswith(repository.name + "/"):
                return repository
        return None

    def repository(self, name: str) -> RepositorySettings | None:
        return self._repositories.get(name)

    def route_for(self, repository_name: str, remote_name: str) -> Route:
        """The route of a cache job (built from a route, so both parts are already valid)."""
        repository = self._repositories.get(repository_name)
        if repository is None:
            raise NameUnknown("repository is not configured", detail={"name": repository_name})
        return Route(repository, remote_name)

    @staticmethod
    def _route(repository: RepositorySettings, remote_name: str) -> Route:
        if repository.is_docker_hub and remote_name and "/" not in remote_name:
            remote_name = f"library/{remote_name}"
        if not remote_name and not any(u.namespace_path for u in repository.upstreams):
            raise NameInvalid(
                "a repository prefix alone is not an image name",
                detail={"name": repository.name},
            )
        full = f"{repository.name}/{remote_name}"
        if len(full) > NAME_MAX_LENGTH or (remote_name and not NAME_RE.match(remote_name)):
            raise NameInvalid("invalid repository name", detail={"name": full[:300]})
        return Route(repository, remote_name)
