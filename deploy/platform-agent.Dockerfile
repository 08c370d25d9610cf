# The reference platform-agent (echo / OpenAI-compatible backends). Build from the root:
#   docker build --network host -f deploy/platform-agent.Dockerfile \
#       -t lambda-surface/platform-agent:local .
ARG BASE_IMAGE=python:3.12-slim

# --- build: identical to deploy/Dockerfile's, so the layers are shared ---------------------
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
    PLATFORM_AGENT_HOST=0.0.0.0 \
    PLATFORM_AGENT_PORT=8090 \
    PLATFORM_AGENT_DB=/data/platform_agent.db \
    PLATFORM_AGENT_WORKSPACE=/workspace
# Same uid as the bot image: the workspace volume is shared between them.
RUN groupadd --system --gid 10001 surface \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin surface \
    && mkdir -p /data /workspace \
    && chown -R surface:surface /data /workspace
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app/ /opt/venv/
USER surface
WORKDIR /data
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('PLATFORM_AGENT_PORT', '8090') + '/health', timeout=3)"]
ENTRYPOINT ["platform-agent"]
