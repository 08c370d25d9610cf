# lambda-surface tasks. `just --list` shows them all.

set dotenv-load := false

# Run the bot. Without MATRIX_HOMESERVER: starts a local Synapse + the echo agent.
run *ARGS:
    uv run surface run {{ARGS}}

# Unit and e2e tests against a real Synapse (installed by `uv sync`) on pytest-xdist workers
# (a test file stays on one worker; each worker starts the Synapses its files need), then
# the Docker Compose tests alone: their timing must not compete with the other tests.
# (Exit 5 is "no test selected", e.g. when ARGS select no compose test.)
test *ARGS:
    uv run pytest tests/unit tests/e2e -m "not compose" -n auto --maxprocesses 4 --dist loadfile {{ARGS}}
    uv run pytest tests/e2e -m compose {{ARGS}} || [ $? -eq 5 ]

# Only the fast unit tests.
unit *ARGS:
    uv run pytest tests/unit {{ARGS}}

# Fullstack Docker Compose tests: starts/reuses a Docker engine, builds the images, runs them.
e2e *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(deploy/docker-engine.sh start)"
    deploy/build-images.sh
    uv run pytest tests/e2e -m compose {{ARGS}}

# Build the bot, platform-agent and Synapse images (BASE_IMAGE env; see deploy/README.md).
images *NAMES:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(deploy/docker-engine.sh start)"
    deploy/build-images.sh {{NAMES}}

# (Re)build local/python-base:bookworm from Debian packages, for hosts without a registry.
base-image:
    #!/usr/bin/env bash
    set -euo pipefail
    eval "$(deploy/docker-engine.sh start)"
    FORCE=1 deploy/base-image.sh

# Start a Docker engine if none answers; in a shell: eval "$(deploy/docker-engine.sh start)"
engine-start:
    deploy/docker-engine.sh start >/dev/null

# Stop the Docker engine that engine-start started (a system engine is left alone).
engine-stop:
    deploy/docker-engine.sh stop

# Lint, format check and type check (mypy --strict over source, benchmarks and tests).
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy

# Format the code.
fmt:
    uv run ruff format .
    uv run ruff check --fix .

# Benchmarks: numbers go to benchmarks/results/.
bench *ARGS:
    uv run python -m benchmarks {{ARGS}}

# Validate configuration and the agent registry.
check-config:
    uv run surface check-config

# A local Synapse for manual testing.
dev-homeserver *ARGS:
    uv run surface dev-homeserver {{ARGS}}
