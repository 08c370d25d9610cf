# Synapse for the fullstack E2E stack only (never for production): matrix-synapse at the
# version pinned in uv.lock, configured at start by runtime.dev.homeserver (the same test
# config as the local dev homeserver: no federation, no key servers, raised rate limits),
# listening on 0.0.0.0:8008 inside its container. Build from the repository root:
#   docker build --network host -f deploy/synapse.Dockerfile -t lambda-surface/synapse:local .
ARG BASE_IMAGE=python:3.12-slim

# --- build: deploy/Dockerfile's stage plus the `synapse` dependency group ------------------
FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
# The base image's CA bundle is the host's (see deploy/base-image.sh): pip and uv must use
# it rather than their bundled roots so an intercepting HTTPS proxy is trusted.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, exactly as uv.lock pins them: rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --no-install-project
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --group synapse --no-install-project
# Our own code goes into a separate prefix, laid over the venv in the final stage, so a
# code change rebuilds only this small layer and the big venv layer stays cached.
COPY README.md ./
COPY contracts/ contracts/
COPY runtime/ runtime/
COPY tasks/ tasks/
COPY platform_agent/ platform_agent/
RUN /opt/uv/bin/uv build --wheel --out-dir /tmp/dist \
    && /opt/uv/bin/uv pip install --no-deps --python /opt/venv/bin/python --prefix /opt/app \
        /tmp/dist/*.whl

# --- runtime -------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SYNAPSE_DATA_DIR=/data \
    SYNAPSE_PORT=8008 \
    SYNAPSE_SERVER_NAME=localhost
RUN groupadd --system --gid 10002 synapse \
    && useradd --system --uid 10002 --gid 10002 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin synapse \
    && mkdir -p /data && chown synapse:synapse /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app/ /opt/venv/
COPY deploy/synapse/ /opt/surface-synapse/
USER synapse
WORKDIR /data
EXPOSE 8008
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('SYNAPSE_PORT', '8008') + '/health', timeout=3)"]
ENTRYPOINT ["python3", "/opt/surface-synapse/entrypoint.py"]
