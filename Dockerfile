# simple-registry: a pull-through caching OCI registry.
#
#   docker build -t simple-registry .
#   docker run -p 8000:8000 -v registry-data:/var/lib/simple-registry simple-registry
#
# The default command runs everything in one process (`server`) with filesystem storage
# under /var/lib/simple-registry (deploy/compose/config.fs.toml). The split deployment runs
# the same image with `frontend` or `cacher` and its own configuration (deploy/).
#
# PYTHON_IMAGE is any image with Python >= 3.11, `python3` on PATH and the venv module
# (ensurepip): the official python:3.11-slim by default; deploy/smoke.sh builds on an image
# made from Debian packages (python3, python3-venv) instead. Both stages use the same base,
# so the wheels built in the first one match the interpreter of the second.
#
# Needs BuildKit (RUN --mount), the default builder since Docker 23; no `# syntax=` line, so
# no frontend image is pulled and the build works offline given its base image.
ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- build: wheels
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services

# The project and every dependency as wheels; the runtime stage installs them offline.
# (A venv keeps this working on bases whose system Python refuses pip, e.g. Debian's.)
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --wheel-dir /wheels .

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="simple-registry" \
      org.opencontainers.image.description="A pull-through caching OCI registry: stateless aiohttp frontends, a Redis Streams job queue, cachers, filesystem or S3 storage." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH="/opt/simple-registry/bin:${PATH}" \
    SIMPLE_REGISTRY_HEALTHCHECK_URL="http://127.0.0.1:8000/healthz"

# A fixed, unprivileged uid/gid (10001): Kubernetes' runAsNonRoot needs a numeric USER,
# and volume permissions are predictable.
RUN groupadd --system --gid 10001 registry \
    && useradd --system --uid 10001 --gid registry --no-log-init \
        --home-dir /var/lib/simple-registry --shell /usr/sbin/nologin registry \
    && install -d -o registry -g registry -m 0750 /var/lib/simple-registry \
    && install -d -m 0755 /etc/simple-registry

# Installed from the first stage's wheels only: no compiler, no index, no build cache here.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/simple-registry \
    && /opt/simple-registry/bin/pip install --no-index --find-links /wheels /wheels/simple_registry-*.whl \
    && /opt/simple-registry/bin/simple-registry --help >/dev/null

COPY deploy/compose/config.fs.toml /etc/simple-registry/config.toml

USER 10001:10001
WORKDIR /var/lib/simple-registry
EXPOSE 8000

# Liveness of the process serving the configured port; a standalone cacher answers on its
# metrics port instead: set SIMPLE_REGISTRY_HEALTHCHECK_URL (deploy/compose.yml does). With
# [server.tls] set an https:// URL: the probe does not verify the certificate (issued for the
# names clients use, not 127.0.0.1), like the kubelet's, it asks whether this process answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['SIMPLE_REGISTRY_HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context()).status == 200 else 1)"]

# SIGTERM: stop accepting, drain in-flight requests up to [server] drain_timeout_secs, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["simple-registry"]
CMD ["-c", "/etc/simple-registry/config.toml", "server"]
