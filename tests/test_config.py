"""Configuration: Simple-Registry's tutorial configs load unchanged; mistakes stop start-up
with the dotted key, the value and what was expected."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from simple_registry.common.config import (
    ConfigError,
    FsStorageSettings,
    S3StorageSettings,
    load_settings,
    parse_settings,
    parse_size,
)

DATA = Path(__file__).parent / "data"
BASE = {
    "blob_store": {"fs": {"root_dir": "/tmp/x"}},
    "repository": {"docker-io": {"upstream": [{"url": "https://registry-1.docker.io"}]}},
}


def with_(**tables: object) -> dict[str, object]:
    merged = {key: value for key, value in BASE.items()}
    merged.update(tables)
    return merged


def test_the_tutorial_step_1_config_loads_unchanged() -> None:
    settings = load_settings([DATA / "tutorial-step1.toml"])
    assert settings.server.port == 8000
    assert isinstance(settings.storage, FsStorageSettings)
    assert settings.global_.access_policy.default_allow is True
    docker_io = settings.repositories["docker-io"]
    assert docker_io.upstreams[0].url == "https://registry-1.docker.io"
    assert settings.unknown_keys == ()


def test_the_tutorial_complete_config_loads_unchanged() -> None:
    settings = load_settings([DATA / "tutorial-complete.toml"])
    assert isinstance(settings.storage, S3StorageSettings)
    assert settings.global_.max_concurrent_cache_jobs == 8
    assert settings.repositories["docker-io"].is_immutable("1.25.0")
    assert not settings.repositories["docker-io"].is_immutable("latest")
    assert not settings.repositories["ghcr.io"].is_immutable("main")
    assert settings.unknown_keys == ()


def test_credentials_never_appear_in_the_settings_repr() -> None:
    settings = load_settings([DATA / "tutorial-complete.toml"])
    text = repr(settings)
    assert "your-password" not in text
    assert "YOUR_SECRET_KEY" not in text
    assert "YOUR_ACCESS_KEY" not in text


def test_later_config_files_merge_over_earlier_ones_table_by_table(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        '[[repository."docker-io".upstream]]\nurl = "https://registry-1.docker.io"\n'
        'username = "u"\npassword = "p"\n[server]\nport = 9000\n'
    )
    settings = load_settings([DATA / "tutorial-step1.toml", secrets])
    assert settings.server.port == 9000
    assert settings.server.bind_address == "0.0.0.0"  # kept from the first file
    assert settings.repositories["docker-io"].upstreams[0].username == "u"


def test_unknown_keys_are_reported_by_their_full_dotted_name() -> None:
    data = with_(
        server={"prot": 1},
        repository={
            "docker-io": {
                "immutable_tag": True,
                "upstream": [{"url": "https://registry-1.docker.io", "pasword": "x"}],
            }
        },
    )
    settings = parse_settings(data)
    assert set(settings.unknown_keys) == {
        "server.prot",
        'repository."docker-io".immutable_tag',
        'repository."docker-io".upstream[0].pasword',
    }


@pytest.mark.parametrize(
    ("tables", "key", "expected"),
    [
        ({"server": {"port": "eighty"}}, "server.port", "an integer"),
        ({"server": {"port": 70000}}, "server.port", "at most 65535"),
        ({"global": {"max_blob_size": "lots"}}, "global.max_blob_size", "a size"),
        ({"global": {"immutable_tags": "yes"}}, "global.immutable_tags", "true or false"),
        (
            {"global": {"immutable_tags_exclusions": ["^ok$", "(unclosed"]}},
            "global.immutable_tags_exclusions[1]",
            "a valid regular expression",
        ),
        (
            {"global": {"max_concurrent_cache_jobs": 0}},
            "global.max_concurrent_cache_jobs",
            "at least 1",
        ),
        ({"global": {"default_repository": "nope"}}, "global.default_repository", "configured"),
        (
            {"global": {"access_policy": {"default": "maybe"}}},
            "global.access_policy.default",
            '"allow" or "deny"',
        ),
        (
            {"global": {"access_policy": {"rules": ["identity.username != "]}}},
            "global.access_policy.rules[0]",
            "a valid CEL rule",
        ),
        (
            {"global": {"access_policy": {"rules": ["identity.username == 'x'", "user == 'x'"]}}},
            "global.access_policy.rules[1]",
            "unknown variable user",
        ),
        (
            {"server": {"tls": {"server_certificate_bundle": "/nonexistent.pem"}}},
            "server.tls.server_certificate_bundle",
            "a readable file",
        ),
        (
            {"auth": {"identity": {"alice": {"username": "alice", "password": "plain"}}}},
            "auth.identity.alice.password",
            "an Argon2 hash",
        ),
        (
            {"auth": {"token_service": {"secret_key": "x"}}},
            "auth.token_service",
            "refused rather than ignored",
        ),
        (
            {"global": {"authorization_webhook": "nope"}},
            "global.authorization_webhook",
            "[auth.webhook.<name>]",
        ),
        (
            {"global": {"trusted_proxies": ["10.0.0.0/33"]}},
            "global.trusted_proxies[0]",
            "an IP address or CIDR",
        ),
        ({"blob_store": {}}, "blob_store", "[blob_store.fs] or [blob_store.s3]"),
        ({"blob_store": {"fs": {}}}, "blob_store.fs.root_dir", "required"),
        (
            {"repository": {"Docker": {"upstream": [{"url": "https://x"}]}}},
            'repository."Docker"',
            "a valid repository name",
        ),
        (
            {"repository": {"docker-io": {"upstream": [{"url": "ftp://x"}]}}},
            'repository."docker-io".upstream[0].url',
            "http:// or https://",
        ),
        (
            {"repository": {"docker-io": {"upstream": []}}},
            'repository."docker-io".upstream',
            "at least one",
        ),
        (
            {"queue": {"redis": {"url": "http://localhost"}}},
            "queue.redis.url",
            "redis://",
        ),
    ],
)
def test_a_bad_value_stops_start_up_naming_key_value_and_expectation(
    tables: dict[str, object], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(with_(**tables))
    assert raised.value.key == key
    assert expected in str(raised.value)
    assert str(raised.value).startswith(key)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5MiB", 5 * 1024**2),
        ("100MB", 100 * 1000**2),
        ("1 GiB", 1024**3),
        ("512", 512),
        (42, 42),
        ("2KiB", 2048),
    ],
)
def test_sizes_parse_with_binary_and_decimal_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_a_repository_exclusion_list_replaces_the_global_one() -> None:
    data = with_(
        **{"global": {"immutable_tags": True, "immutable_tags_exclusions": ["^latest$"]}},
        repository={
            "docker-io": {
                "immutable_tags_exclusions": ["^nightly"],
                "upstream": [{"url": "https://x"}],
            },
            "quay": {"upstream": [{"url": "https://quay.io"}]},
        },
    )
    settings = parse_settings(data)
    assert settings.repositories["docker-io"].is_immutable("latest")
    assert not settings.repositories["docker-io"].is_immutable("nightly-1")
    assert not settings.repositories["quay"].is_immutable("latest")
    assert settings.repositories["quay"].is_immutable("1.0")


def test_both_access_policy_forms_are_accepted() -> None:
    old = parse_settings(with_(**{"global": {"access_policy": {"default_allow": True}}}))
    new = parse_settings(with_(**{"global": {"access_policy": {"default": "allow"}}}))
    deny = parse_settings(with_(**{"global": {"access_policy": {"default": "deny"}}}))
    assert old.global_.access_policy.default_allow
    assert new.global_.access_policy.default_allow
    assert not deny.global_.access_policy.default_allow


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simple_registry.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_exits_2_and_names_the_key_of_a_bad_value(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        (DATA / "tutorial-step1.toml").read_text() + '\n[global]\nmax_blob_size = "huge"\n'
    )
    result = run_cli("-c", str(config), "server")
    assert result.returncode == 2
    assert "global.max_blob_size" in result.stderr
    assert "'huge'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_line_exits_2_on_a_file_that_is_not_toml(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server\nport = 1\n")
    result = run_cli("-c", str(config), "check-config")
    assert result.returncode == 2
    assert "valid TOML" in result.stderr


def test_the_command_line_warns_about_unknown_keys_but_starts(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        (DATA / "tutorial-step1.toml").read_text() + "\n[global]\nimutable_tags = true\n"
    )
    result = run_cli("-c", str(config), "check-config")
    assert result.returncode == 0, result.stderr
    assert "unknown configuration key global.imutable_tags" in result.stderr


def test_the_frontend_refuses_to_start_without_a_shared_queue() -> None:
    result = run_cli("-c", str(DATA / "tutorial-step1.toml"), "frontend")
    assert result.returncode == 2
    assert "queue.redis" in result.stderr


def test_a_secret_value_is_never_echoed_in_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        (DATA / "tutorial-step1.toml")
        .read_text()
        .replace(
            'url = "https://registry-1.docker.io"',
            'url = "https://registry-1.docker.io"\npassword = "hunter2"',
        )
    )
    result = run_cli("-c", str(config), "check-config")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def _taken_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize("command", ["server", "cacher"])
def test_a_taken_port_is_a_one_line_error_naming_the_address(tmp_path: Path, command: str) -> None:
    holder, port = _taken_port()
    override = tmp_path / "override.toml"
    override.write_text(
        f'[server]\nbind_address = "127.0.0.1"\nport = {port}\n'
        f'[cacher]\nmetrics_bind_address = "127.0.0.1"\nmetrics_port = {port}\n'
        + (
            '[queue.redis]\nurl = "redis://127.0.0.1:1/0"\n'
            'job_signing_key = "a-test-key-of-some-length"\n'
            if command == "cacher"
            else ""
        )
        + f'[blob_store.fs]\nroot_dir = "{tmp_path / "data"}"\n'
    )
    with holder:
        result = run_cli("-c", str(DATA / "tutorial-step1.toml"), "-c", str(override), command)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert len(lines) == 1


def test_angos_gc_grace_secs_is_the_default_grace_of_unreferenced_blobs() -> None:
    base = {"blob_store": {"fs": {"root_dir": "/tmp/x"}}}
    assert parse_settings({**base, "global": {"gc_grace_secs": 42}}).eviction.blob_grace_secs == 42
    both = {**base, "global": {"gc_grace_secs": 42}, "eviction": {"blob_grace_secs": 7}}
    assert parse_settings(both).eviction.blob_grace_secs == 7
    assert parse_settings({**base, "global": {"gc_grace_secs": 42}}).unknown_keys == ()
