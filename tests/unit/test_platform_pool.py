"""PlatformPool: sessions, LRU and idle eviction, no retries of its own, explicit disconnect."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import pytest

from contracts.platform import (
    ContextInfo,
    PlatformClient,
    PlatformError,
    PlatformEvent,
    PlatformHealth,
    PlatformRejected,
    PlatformTimeout,
    PlatformUnavailable,
    Snapshot,
    TextDelta,
    TurnDone,
    UserTurn,
)
from tasks.platform_pool import PlatformPool, PoolStatistics


class FakePlatform:
    """Records every call; `failures` scripts errors raised before a turn's first event."""

    def __init__(self) -> None:
        self.turns: list[tuple[str, str]] = []
        self.disconnects: list[tuple[str, str]] = []
        self.failures: list[PlatformError] = []
        self.fail_after_first: PlatformError | None = None
        self.disconnect_error: PlatformError | None = None
        self.gate: anyio.Event | None = None
        self.disconnected = anyio.Event()
        self.streams_closed = 0

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        self.turns.append((turn.agent_id, turn.platform_chat_id))
        if self.failures:
            raise self.failures.pop(0)
        try:
            yield TextDelta(text=f"echo: {turn.text}")
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_after_first is not None:
                raise self.fail_after_first
            yield TurnDone(text=f"echo: {turn.text}")
        finally:
            self.streams_closed += 1

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        self.disconnects.append((agent_id, platform_chat_id))
        self.disconnected.set()
        if self.disconnect_error is not None:
            raise self.disconnect_error

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        return Snapshot(snapshot_id="1", name=name, created_at="now")

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return []

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id)

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id, turns=3)

    async def health(self) -> PlatformHealth:
        return PlatformHealth(ok=True, version="fake")


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def turn(chat: str, text: str = "hi", agent: str = "echo") -> UserTurn:
    return UserTurn(agent_id=agent, platform_chat_id=chat, text=text, idempotency_key=f"${chat}")


async def run_turn(pool: PlatformPool, chat: str, text: str = "hi") -> list[PlatformEvent]:
    async with aclosing(pool.send_turn(turn(chat, text))) as events:
        return [event async for event in events]


@pytest.fixture
def inner() -> FakePlatform:
    return FakePlatform()


# -- pass-through and statistics -----------------------------------------------------------------


def test_the_pool_is_a_platform_client(inner: FakePlatform) -> None:
    assert isinstance(PlatformPool(inner), PlatformClient)


async def test_turns_pass_through_and_count_hits_and_misses(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)

    first = await run_turn(pool, "1", "a")
    await run_turn(pool, "1", "b")
    await run_turn(pool, "2", "c")

    assert first == [TextDelta(text="echo: a"), TurnDone(text="echo: a")]
    assert pool.statistics() == PoolStatistics(size=2, hits=1, misses=2, evictions=0, errors=0)


def test_statistics_are_a_frozen_snapshot(inner: FakePlatform) -> None:
    stats = PlatformPool(inner).statistics()

    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.size = 5  # type: ignore[misc]


async def test_other_calls_go_straight_to_the_inner_platform(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)

    info = await pool.context_info("echo", "1")
    health = await pool.health()
    snapshot = await pool.save_snapshot("echo", "1", owner="@a:x", name="n")

    assert info.turns == 3
    assert health.version == "fake"
    assert snapshot.name == "n"
    assert pool.statistics().size == 0


# -- LRU eviction --------------------------------------------------------------------------------


async def test_a_full_pool_evicts_the_least_recently_used_session(inner: FakePlatform) -> None:
    pool = PlatformPool(inner, max_sessions=2)

    await run_turn(pool, "A")
    await run_turn(pool, "B")
    await run_turn(pool, "A")  # A is now the most recent
    await run_turn(pool, "C")

    assert inner.disconnects == [("echo", "B")]
    assert pool.live_sessions() == [("echo", "A"), ("echo", "C")]
    assert pool.statistics().evictions == 1


async def test_a_session_in_a_turn_is_never_evicted(inner: FakePlatform) -> None:
    pool = PlatformPool(inner, max_sessions=1)
    inner.gate = anyio.Event()

    async with aclosing(pool.send_turn(turn("A"))) as busy:
        assert await anext(busy) == TextDelta(text="echo: hi")
        inner.gate = None
        await run_turn(pool, "B")
        assert inner.disconnects == []
        assert pool.statistics().size == 2
        assert [e async for e in busy] == [TurnDone(text="echo: hi")]

    await run_turn(pool, "C")

    assert inner.disconnects == [("echo", "A"), ("echo", "B")]
    assert pool.live_sessions() == [("echo", "C")]


async def test_a_failed_eviction_disconnect_is_counted_not_raised(inner: FakePlatform) -> None:
    pool = PlatformPool(inner, max_sessions=1)
    inner.disconnect_error = PlatformUnavailable("down")

    await run_turn(pool, "A")
    events = await run_turn(pool, "B")

    assert events[-1] == TurnDone(text="echo: hi")
    assert pool.statistics().errors == 1
    assert pool.live_sessions() == [("echo", "B")]


# -- idle eviction -------------------------------------------------------------------------------


async def test_evict_idle_closes_only_sessions_idle_long_enough(inner: FakePlatform) -> None:
    clock = ManualClock()
    pool = PlatformPool(inner, idle_timeout=60, clock=clock)
    await run_turn(pool, "old")
    clock.now = 30
    await run_turn(pool, "new")
    clock.now = 59.5

    assert await pool.evict_idle() == 0
    clock.now = 60.5

    assert await pool.evict_idle() == 1
    assert inner.disconnects == [("echo", "old")]
    assert pool.live_sessions() == [("echo", "new")]


async def test_a_busy_session_is_not_idle(inner: FakePlatform) -> None:
    clock = ManualClock()
    pool = PlatformPool(inner, idle_timeout=60, clock=clock)
    inner.gate = anyio.Event()

    async with aclosing(pool.send_turn(turn("A"))) as busy:
        await anext(busy)
        clock.now = 1000
        assert await pool.evict_idle() == 0
        inner.gate.set()
        _ = [e async for e in busy]

    assert inner.disconnects == []


@pytest.mark.virtual_time
async def test_run_sweeps_idle_sessions_on_its_own(
    inner: FakePlatform, time_is_virtual: bool
) -> None:
    scale = 1.0 if time_is_virtual else 0.01  # asyncio runs on the real clock
    pool = PlatformPool(inner, idle_timeout=60 * scale, sweep_interval=10 * scale)

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await run_turn(pool, "A")
        last_used = anyio.current_time()
        with anyio.fail_after(120 * scale + 5):
            await inner.disconnected.wait()
        idle_for = anyio.current_time() - last_used
        tg.cancel_scope.cancel()

    assert inner.disconnects == [("echo", "A")]
    assert pool.statistics().evictions == 1
    assert idle_for >= 60 * scale
    if time_is_virtual:  # swept within one interval of going stale
        assert idle_for <= (60 + 10) * scale


@pytest.mark.virtual_time
@pytest.mark.trio_only
async def test_run_keeps_a_session_that_is_used(inner: FakePlatform, time_is_virtual: bool) -> None:
    assert time_is_virtual
    pool = PlatformPool(inner, idle_timeout=60, sweep_interval=10)

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        for _ in range(10):  # a turn every 45 s for 450 s
            await run_turn(pool, "A")
            await anyio.sleep(45)
        still_live = pool.live_sessions()
        tg.cancel_scope.cancel()

    assert still_live == [("echo", "A")]
    assert pool.statistics().evictions == 0


async def test_run_disconnects_every_session_when_cancelled(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await run_turn(pool, "A")
        await run_turn(pool, "B")
        tg.cancel_scope.cancel()

    assert sorted(inner.disconnects) == [("echo", "A"), ("echo", "B")]
    assert pool.statistics().size == 0


# -- errors: the pool does not retry (the platform adapter owns retries) ------------------------


@pytest.mark.parametrize(
    "error", [PlatformUnavailable("down"), PlatformTimeout("slow"), PlatformRejected("no")]
)
async def test_a_failing_turn_is_asked_once_and_raised(
    inner: FakePlatform, error: PlatformError
) -> None:
    pool = PlatformPool(inner)
    inner.failures = [error, error]

    with pytest.raises(type(error)):
        await run_turn(pool, "A")

    assert len(inner.turns) == 1
    assert pool.statistics().errors == 1


async def test_an_error_after_the_first_event_reaches_the_caller(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)
    inner.fail_after_first = PlatformUnavailable("dropped mid-answer")

    with pytest.raises(PlatformUnavailable, match="dropped mid-answer"):
        await run_turn(pool, "A")

    assert len(inner.turns) == 1
    assert pool.statistics().errors == 1


async def test_a_failed_turn_leaves_the_session_idle(inner: FakePlatform) -> None:
    clock = ManualClock()
    pool = PlatformPool(inner, idle_timeout=1, clock=clock)
    inner.failures = [PlatformUnavailable("down")]

    with pytest.raises(PlatformUnavailable):
        await run_turn(pool, "A")
    clock.now = 2

    assert await pool.evict_idle() == 1


async def test_a_consumer_that_stops_early_closes_the_inner_stream(inner: FakePlatform) -> None:
    clock = ManualClock()
    pool = PlatformPool(inner, idle_timeout=1, clock=clock)

    async with aclosing(pool.send_turn(turn("A"))) as events:
        await anext(events)
    clock.now = 2

    assert inner.streams_closed == 1
    assert await pool.evict_idle() == 1  # the session is idle again, not stuck busy


# -- explicit disconnect -------------------------------------------------------------------------


async def test_disconnect_closes_the_session_and_tells_the_platform(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)
    await run_turn(pool, "A")
    await run_turn(pool, "B")

    await pool.disconnect("echo", "A")

    assert inner.disconnects == [("echo", "A")]
    assert pool.live_sessions() == [("echo", "B")]
    assert pool.statistics().evictions == 0


async def test_disconnect_reaches_the_platform_even_without_a_session(
    inner: FakePlatform,
) -> None:
    pool = PlatformPool(inner)

    await pool.disconnect("echo", "from-before-a-restart")

    assert inner.disconnects == [("echo", "from-before-a-restart")]


async def test_disconnect_errors_reach_the_caller(inner: FakePlatform) -> None:
    pool = PlatformPool(inner)
    inner.disconnect_error = PlatformUnavailable("down")

    with pytest.raises(PlatformUnavailable):
        await pool.disconnect("echo", "A")
