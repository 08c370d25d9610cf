"""End-to-end fixtures: one real Synapse per test session, on a free loopback port.

Without matrix-synapse installed these tests are skipped, unless SURFACE_REQUIRE_E2E=1
(CI sets it) turns the skip into a failure so a broken environment cannot pass silently.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import HomeserverConfig, LocalHomeserver
from runtime.dev.user import UserClient

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


# The `limited_synapse` fixture's message limit for every user (Synapse's config takes
# fractions; its per-user admin override takes whole numbers only).
LIMITED_MESSAGES = {"per_second": 0.5, "burst_count": 2}


@pytest.fixture(scope="session")
def limited_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHomeserver]:
    """A second Synapse whose `rc_message` limits every user to LIMITED_MESSAGES.

    Started only for the tests that ask for it; a test exempts the users it does not
    want limited (`harness.override_ratelimit(..., per_second=0)`).
    """
    _require_synapse()
    data_dir = tmp_path_factory.mktemp("limited-synapse")
    config = HomeserverConfig(data_dir=data_dir, port=0, overrides={"rc_message": LIMITED_MESSAGES})
    with LocalHomeserver(config) as server:
        yield server


_user_numbers = itertools.count(1)


@pytest.fixture
def register(synapse: LocalHomeserver) -> Callable[..., RegisteredUser]:
    """``register(prefix="user", admin=False)`` creates a new user with a unique localpart."""

    def register_new(prefix: str = "user", *, admin: bool = False) -> RegisteredUser:
        localpart = f"{prefix}-{next(_user_numbers)}"
        return synapse.register_user(localpart, secrets.token_urlsafe(16), admin=admin)

    return register_new


@pytest.fixture
def make_bot(
    synapse: LocalHomeserver, register: Callable[..., RegisteredUser], tmp_path: Path
) -> Iterator[Callable[..., BotProcess]]:
    """``make_bot(**BotProcess options)``: a new bot account and process, started and ready.

    Every bot made is killed at the end of the test.
    """
    made: list[BotProcess] = []

    def make(**options: Any) -> BotProcess:
        workdir = tmp_path / ("bot" if not made else f"bot{len(made) + 1}")
        process = BotProcess(synapse, register("bot"), workdir, **options)
        made.append(process)
        process.start_ready()
        return process

    yield make
    for process in made:
        process.kill()


@pytest.fixture
def bot(make_bot: Callable[..., BotProcess]) -> BotProcess:
    """The bot with the built-in echo agent."""
    return make_bot()


@pytest.fixture
async def alice(
    synapse: LocalHomeserver, register: Callable[..., RegisteredUser]
) -> AsyncIterator[UserClient]:
    """A fresh Matrix user, logged in."""
    user = await UserClient.login(synapse.base_url, register("alice"))
    yield user
    await user.close()
