"""End-to-end fixtures: one real Synapse per test session, on a free loopback port.

Under pytest-xdist (`just test`) each worker is a session of its own: it starts the
Synapses (`synapse`, `limited_synapse`, `encrypting_synapse`) that its test files ask
for, so users, rooms and rate limits never cross workers.

Without matrix-synapse installed these tests are skipped, unless SURFACE_REQUIRE_E2E=1
(CI sets it) turns the skip into a failure so a broken environment cannot pass silently.
The same holds for Node.js, which runs the matrix-js-sdk person (`make_person`); its npm
packages are installed from tests/e2e/jsclient/package-lock.json on first use.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn

import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import HomeserverConfig, LocalHomeserver
from runtime.dev.user import UserClient
from tests.e2e.js_person import JsClientUnavailable, JsPerson, ensure_installed
from tests.e2e.platform_service import PlatformProcess, running_platform

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


def _missing_prerequisite(reason: str) -> NoReturn:
    """Skip, or fail under SURFACE_REQUIRE_E2E=1 (CI), because `reason`."""
    if os.environ.get("SURFACE_REQUIRE_E2E") == "1":
        pytest.fail(f"SURFACE_REQUIRE_E2E=1 but {reason}")
    pytest.skip(reason)


def _require_synapse() -> None:
    if importlib.util.find_spec("synapse") is not None:
        return
    _missing_prerequisite(
        "matrix-synapse is not installed in this environment "
        "(install the 'synapse' dependency group: `uv sync --group synapse`)"
    )


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


@pytest.fixture(scope="session")
def encrypting_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHomeserver]:
    """A second session Synapse that encrypts every new room, as many homeservers do.

    Started only when a test asks for it: test_e2ee.py overrides `synapse` with it, so its
    bots, persons and users all live on this server.
    """
    _require_synapse()
    config = HomeserverConfig(
        data_dir=tmp_path_factory.mktemp("synapse-encrypting"),
        port=0,
        overrides={"encryption_enabled_by_default_for_room_type": "all"},
    )
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


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformProcess]:
    """The reference platform-agent (echo backend), healthy; killed at the end of the test."""
    with running_platform(tmp_path / "platform") as service:
        yield service


@pytest.fixture(scope="session")
def jsclient() -> Path:
    """tests/e2e/jsclient with its pinned npm packages installed (`npm ci` when stale)."""
    try:
        return ensure_installed()
    except JsClientUnavailable as exc:
        _missing_prerequisite(f"the matrix-js-sdk person cannot run: {exc}")


MakePerson = Callable[..., Awaitable[JsPerson]]
_person_numbers = itertools.count(1)


@pytest.fixture
async def make_person(
    synapse: LocalHomeserver,
    register: Callable[..., RegisteredUser],
    jsclient: Path,
    tmp_path: Path,
) -> AsyncIterator[MakePerson]:
    """``await make_person(prefix="person", user=None, cross_signing=True, only_signed=True)``.

    A new user (or `user` again, on a new device) on matrix-js-sdk Rust crypto, logged in
    (see tests/e2e/js_person.py); its driver log is ``tmp_path/<localpart>-<n>.js.log``.
    Every person made is killed at the end.
    """
    async with AsyncExitStack() as stack:

        async def make(
            prefix: str = "person",
            *,
            user: RegisteredUser | None = None,
            cross_signing: bool = True,
            only_signed: bool = True,
        ) -> JsPerson:
            user = user or register(prefix)
            localpart = user.user_id.split(":")[0].lstrip("@")
            return await stack.enter_async_context(
                JsPerson.started(
                    synapse.base_url,
                    user,
                    tmp_path / f"{localpart}-{next(_person_numbers)}.js.log",
                    cross_signing=cross_signing,
                    only_signed=only_signed,
                )
            )

        yield make
