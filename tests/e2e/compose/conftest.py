"""Fixtures for the fullstack Docker Compose tests (deploy/docker-compose.fullstack.yml).

pytest-docker brings the stack up once per session (`up --wait`: every health gate of
the file, no sleeps) and takes it down with its volumes at the end. The images must exist
(`just images`; `just e2e` and .ci/run build them first). Without a Docker engine, the
Compose plugin or the images these tests skip, unless SURFACE_REQUIRE_E2E=1 (CI) turns
the skip into a failure.

When a test (or the stack start) fails, the logs of every service and `compose ps` go
to SURFACE_E2E_RESULTS (default .local/e2e-results/) in a folder named after the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Generator, Iterator

import pytest

from tests.e2e.compose.stack import (
    BOT_ENV,
    COMPOSE_DIR,
    COMPOSE_FILE,
    IMAGES,
    RESULTS,
    UP_TIMEOUT_S,
    Compose,
    Stack,
    env_file,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(COMPOSE_DIR):
            item.add_marker(pytest.mark.compose)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Read by `save_logs_on_failure` after the test.
    setattr(item, f"compose_report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # matrix-nio runs on asyncio only.
    return "asyncio"


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("SURFACE_REQUIRE_E2E") == "1":
        pytest.fail(f"SURFACE_REQUIRE_E2E=1 but {reason}")
    pytest.skip(reason)


def _quiet(*command: str) -> bool:
    try:
        result = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def compose_ready() -> None:
    """Skip (or fail under SURFACE_REQUIRE_E2E=1) unless engine, Compose and images exist."""
    _require(shutil.which("docker") is not None, "the docker CLI is not installed")
    _require(
        _quiet("docker", "compose", "version"),
        "the Compose plugin is missing (`deploy/docker-engine.sh start` installs it)",
    )
    _require(
        _quiet("docker", "info"),
        'no Docker engine answers (start one: eval "$(deploy/docker-engine.sh start)")',
    )
    missing = [
        os.environ.get(variable, default)
        for variable, default in IMAGES.items()
        if not _quiet("docker", "image", "inspect", os.environ.get(variable, default))
    ]
    _require(not missing, f"images {', '.join(missing)} are missing (run `just images`)")


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"surface-e2e-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # No --build (the images are built beforehand, with the host network) and no pulls:
    # air-gapped hosts have no registry to pull from.
    return [f"up -d --wait --wait-timeout {UP_TIMEOUT_S} --pull never"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down --volumes --remove-orphans --timeout 10"]


@pytest.fixture(scope="session")
def stack(
    compose_ready: None, docker_compose_project_name: str, request: pytest.FixtureRequest
) -> Stack:
    """The running fullstack stack, every service healthy."""
    compose = Compose(docker_compose_project_name)
    started = time.monotonic()
    try:
        request.getfixturevalue("docker_services")
    except Exception:
        # pytest-docker does not take a stack down whose `up` failed; we do, logs first.
        saved = compose.save_logs(RESULTS / "stack-up")
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        print(f"\ncompose: stack failed to start; logs in {saved}")
        raise
    print(
        f"\ncompose: stack {compose.project} up and healthy in {time.monotonic() - started:.1f} s"
    )
    return Stack(compose, bot_user_id=env_file(BOT_ENV)["MATRIX_USER_ID"])


@pytest.fixture(autouse=True)
def save_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reports = (getattr(request.node, f"compose_report_{when}", None) for when in ("setup", "call"))
    if not any(report is not None and report.failed for report in reports):
        return
    project = request.getfixturevalue("docker_compose_project_name")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        saved = Compose(project).save_logs(RESULTS / name)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"\ncompose: could not save the logs: {exc}")
    else:
        print(f"\ncompose: logs of every service saved in {saved}")
