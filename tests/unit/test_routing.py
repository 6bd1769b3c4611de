"""Routing a client's name to a repository and an upstream name."""

from __future__ import annotations

import pytest
from simple_registry.common.config import parse_settings
from simple_registry.common.errors import NameInvalid, NameUnknown
from simple_registry.common.oci import RepositoryName
from simple_registry.common.routing import Router


def router(default_repository: str | None = None) -> Router:
    settings = parse_settings(
        {
            "blob_store": {"fs": {"root_dir": "/tmp/x"}},
            "global": {"default_repository": default_repository} if default_repository else {},
            "repository": {
                "docker-io": {
                    "namespace": "docker.io",
                    "upstream": [{"url": "https://registry-1.docker.io"}],
                },
                "ghcr.io": {"namespace": "ghcr.io", "upstream": [{"url": "https://ghcr.io"}]},
                "corp": {"upstream": [{"url": "https://registry.corp.example/mirror/base"}]},
                "corp/team": {"upstream": [{"url": "https://team.corp.example"}]},
            },
        }
    )
    return Router(settings.repositories, settings.global_.default_repository)


def resolve(name: str, ns: str | None = None, default: str | None = None) -> tuple[str, str]:
    route = router(default).resolve(RepositoryName.parse(name), ns)
    return route.repository.name, route.upstream_name(route.repository.upstreams[0])


@pytest.mark.parametrize(
    ("name", "ns", "expected"),
    [
        ("docker-io/library/nginx", None, ("docker-io", "library/nginx")),
        ("docker-io/nginx", None, ("docker-io", "library/nginx")),
        ("ghcr.io/org/tool", None, ("ghcr.io", "org/tool")),
        ("corp/app", None, ("corp", "mirror/base/app")),
        ("corp/team/app", None, ("corp/team", "app")),
        ("corp/teams/app", None, ("corp", "mirror/base/teams/app")),
        ("library/nginx", "docker.io", ("docker-io", "library/nginx")),
        ("nginx", "docker.io", ("docker-io", "library/nginx")),
        ("org/tool", "ghcr.io", ("ghcr.io", "org/tool")),
    ],
)
def test_a_name_goes_to_the_longest_whole_segment_prefix_or_its_namespace(
    name: str, ns: str | None, expected: tuple[str, str]
) -> None:
    assert resolve(name, ns) == expected


def test_a_name_without_a_repository_prefix_goes_to_the_default_repository() -> None:
    assert resolve("library/nginx", default="docker-io") == ("docker-io", "library/nginx")
    assert resolve("alpine", default="docker-io") == ("docker-io", "library/alpine")


def test_an_unprefixed_name_without_a_default_repository_is_unknown() -> None:
    with pytest.raises(NameUnknown):
        resolve("library/nginx")


def test_a_repository_prefix_alone_is_not_an_image() -> None:
    with pytest.raises(NameInvalid):
        resolve("docker-io")


def test_both_ways_of_naming_a_docker_hub_image_share_one_storage_name() -> None:
    r = router()
    a = r.resolve(RepositoryName.parse("docker-io/nginx"))
    b = r.resolve(RepositoryName.parse("docker-io/library/nginx"))
    c = r.resolve(RepositoryName.parse("library/nginx"), "docker.io")
    assert a.storage_name == b.storage_name == c.storage_name == "docker-io/library/nginx"


@pytest.mark.parametrize(
    ("stored_name", "owner"),
    [
        ("corp/team/app", "corp/team"),
        ("corp/teams/app", "corp"),
        ("ghcr.io/org/tool", "ghcr.io"),
        ("docker-io/library/nginx", "docker-io"),
        ("elsewhere/app", None),
    ],
)
def test_a_stored_name_belongs_to_the_repository_with_the_longest_whole_segment_key(
    stored_name: str, owner: str | None
) -> None:
    repository = router().owner(stored_name)
    assert (repository.name if repository else None) == owner


@pytest.mark.parametrize("name", ["library/alpine", "docker-io/library/alpine"])
def test_a_namespace_no_repository_serves_is_unknown_even_with_a_default_repository(
    name: str,
) -> None:
    with pytest.raises(NameUnknown):
        resolve(name, ns="quay.io", default="docker-io")


def test_the_default_repository_applies_only_without_a_namespace() -> None:
    assert resolve("library/alpine", default="docker-io") == ("docker-io", "library/alpine")
    assert resolve("library/alpine", ns="docker.io", default="ghcr.io") == (
        "docker-io",
        "library/alpine",
    )
