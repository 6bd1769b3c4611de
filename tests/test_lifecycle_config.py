"""The lifecycle's configuration through `check-config`: Angos's retention keys are read (no
longer "ignored"), and a bad rule or `[eviction]` value stops start-up naming its key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.fixtures.mirror import REGISTRY_COMMAND

UPSTREAM = [{"url": "https://registry-1.docker.io"}]


def check(tmp_path: Path, **tables: Any) -> subprocess.CompletedProcess[str]:
    config: dict[str, Any] = {
        "server": {"bind_address": "127.0.0.1"},
        "global": {"access_policy": {"default": "allow"}},
        "blob_store": {"fs": {"root_dir": str(tmp_path / "data")}},
        "repository": {"docker-io": {"upstream": UPSTREAM}},
    }
    for key, value in tables.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return subprocess.run(
        [*REGISTRY_COMMAND, "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_angos_retention_keys_and_the_eviction_table_load_without_being_ignored(
    tmp_path: Path,
) -> None:
    result = check(
        tmp_path,
        **{
            "global": {
                "update_pull_time": True,
                "retention_policy": {"rules": ['image.tag == "latest"', "top_pulled(5)"]},
            },
            "repository": {
                "docker-io": {
                    "upstream": UPSTREAM,
                    "retention_policy": {"rules": ["image.pushed_at > now() - days(30)"]},
                }
            },
            "eviction": {"max_size": "500GiB", "interval_secs": 300, "blob_grace_secs": 600},
        },
    )
    assert result.returncode == 0, result.stderr
    assert "ignored" not in result.stderr
    assert "unknown configuration key" not in result.stderr


@pytest.mark.parametrize(
    ("tables", "key", "expected"),
    [
        (
            {"global": {"retention_policy": {"rules": ["image.tag =="]}}},
            "global.retention_policy.rules[0]",
            "a CEL retention rule",
        ),
        (
            {"global": {"retention_policy": {"rules": ['image.tag == "a"', "image.size > 1"]}}},
            "global.retention_policy.rules[1]",
            "unknown: image.size",
        ),
        (
            {"global": {"retention_policy": {"rules": ["request.action == 'x'"]}}},
            "global.retention_policy.rules[0]",
            "unknown variable request",
        ),
        (
            {"global": {"retention_policy": {"rules": ["image.last_pulled_at > now() - days(7)"]}}},
            "global.retention_policy.rules[0]",
            "update_pull_time = true",
        ),
        (
            {"global": {"retention_policy": {"rules": "image.tag != null"}}},
            "global.retention_policy.rules",
            "a list of CEL rules",
        ),
        ({"eviction": {"max_size": "lots"}}, "eviction.max_size", "a size"),
        ({"eviction": {"interval_secs": -1}}, "eviction.interval_secs", "a number of seconds"),
    ],
)
def test_a_bad_retention_rule_or_eviction_value_stops_start_up_naming_its_key(
    tmp_path: Path, tables: dict[str, Any], key: str, expected: str
) -> None:
    result = check(tmp_path, **tables)
    assert result.returncode == 2
    assert f"configuration error: {key} = " in result.stderr
    assert expected in result.stderr


def test_a_repository_rule_needing_pull_times_is_refused_like_a_global_one(
    tmp_path: Path,
) -> None:
    repository = {"upstream": UPSTREAM, "retention_policy": {"rules": ["top_pulled(3)"]}}
    result = check(tmp_path, repository={"docker-io": repository})
    assert result.returncode == 2
    assert 'repository."docker-io".retention_policy.rules[0]' in result.stderr
