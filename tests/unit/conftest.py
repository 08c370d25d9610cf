from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from surfaces import Surface, make_surface
from trio.testing import MockClock

from runtime.store import SqliteStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_time: on trio, run the test under MockClock(autojump_threshold=0) "
        "so sleeps and timeouts pass instantly",
    )
    config.addinivalue_line(
        "markers",
        "trio_only: the behaviour needs trio's MockClock; the asyncio run is deselected "
        "(not skipped: it is not a test that could pass)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asyncio_runs = [
        item
        for item in items
        if item.get_closest_marker("trio_only") is not None and "[asyncio" in item.name
    ]
    if asyncio_runs:
        config.hook.pytest_deselected(items=asyncio_runs)
        items[:] = [item for item in items if item not in asyncio_runs]


@pytest.fixture(
    params=[pytest.param(("asyncio", {}), id="asyncio"), pytest.param(("trio", {}), id="trio")]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every async unit test runs on asyncio and on trio.

    Tests marked ``virtual_time`` get a trio MockClock that jumps ahead
    whenever all tasks sleep; asyncio keeps real time, so such tests pick tiny
    durations there (see ``time_is_virtual``).
    """
    backend, options = request.param
    if backend == "trio" and request.node.get_closest_marker("virtual_time") is not None:
        # A fresh clock per test: a MockClock keeps its virtual time across runs.
        return backend, {**options, "clock": MockClock(autojump_threshold=0)}
    return backend, options


@pytest.fixture
def time_is_virtual(anyio_backend: tuple[str, dict[str, Any]]) -> bool:
    """Whether this test's sleeps and timeouts run on a MockClock."""
    return "clock" in anyio_backend[1]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's MATRIX_*/SURFACE_* variables or .env leak into a test."""
    for name in list(os.environ):
        if name.upper().startswith(("MATRIX_", "SURFACE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Code under test configures logging for the process; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The bot's real SQLite store in this test's tmp_path, closed afterwards."""
    with SqliteStore(tmp_path / "bot.db") as opened:
        yield opened


@pytest.fixture
def surface(store: SqliteStore) -> Surface:
    """A bot with the default options on `store` (tests/unit/surfaces.py)."""
    return make_surface(store)
