"""End-to-end fixtures: one real Synapse per test session, on a free loopback port.

Without matrix-synapse installed these tests are skipped, unless SURFACE_REQUIRE_E2E=1
(CI sets it) turns the skip into a failure so a broken environment cannot pass silently.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.dev_homeserver import HomeserverConfig, LocalHomeserver, RegisteredUser

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not just ours.
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def anyio_backend() -> str:
    # matrix-nio is built on asyncio (aiohttp); it cannot run under trio.
    return "asyncio"


def _require_synapse() -> None:
    if importlib.util.find_spec("synapse") is not None:
        return
    reason = (
        "matrix-synapse is not installed in this environment "
        "(install the 'synapse' dependency group: `uv sync --group synapse`)"
    )
    if os.environ.get("SURFACE_REQUIRE_E2E") == "1":
        pytest.fail(f"SURFACE_REQUIRE_E2E=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHomeserver]:
    """A started Synapse shared by the whole session; stopped at the end."""
    _require_synapse()
    data_dir = tmp_path_factory.mktemp("synapse")
    with LocalHomeserver(HomeserverConfig(data_dir=data_dir, port=0)) as server:
        yield server


_user_numbers = itertools.count(1)


@pytest.fixture
def register(synapse: LocalHomeserver) -> Callable[..., RegisteredUser]:
    """``register(prefix="user", admin=False)`` creates a new user with a unique localpart."""

    def register_new(prefix: str = "user", *, admin: bool = False) -> RegisteredUser:
        localpart = f"{prefix}-{next(_user_numbers)}"
        return synapse.register_user(localpart, secrets.token_urlsafe(16), admin=admin)

    return register_new
