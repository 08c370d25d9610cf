# lambda-surface tasks. `just --list` shows them all.

set dotenv-load := false

# Run the bot. Without MATRIX_HOMESERVER: starts a local Synapse + the echo agent.
run *ARGS:
    uv run surface run {{ARGS}}

# Unit tests, then e2e tests against a real Synapse (installed by `uv sync`).
test *ARGS:
    uv run pytest tests/unit tests/e2e {{ARGS}}

# Only the fast unit tests.
unit *ARGS:
    uv run pytest tests/unit {{ARGS}}

# The fullstack Docker Compose tests (needs a Docker engine; see deploy/README.md).
e2e *ARGS:
    uv run pytest tests/e2e -m compose {{ARGS}}

# Lint, format check and type check.
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
