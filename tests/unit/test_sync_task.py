"""SyncTask: record durably, then dispatch; per-room order, cross-room concurrency, retries."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from fakes import FakeMatrix
from structlog.testing import capture_logs

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import (
    JsonDict,
    MatrixAuthError,
    MatrixEvent,
    MatrixRateLimited,
    MatrixSyncTokenInvalid,
    MatrixUnreachable,
)
from contracts.platform import PlatformEvent, UserTurn
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord, RoomType
from contracts.store import INVITE_ENTRY_TYPE, LedgerEntry, StoreBusy, invite_entry_id
from runtime.platforms.echo import EchoPlatform
from runtime.store import SqliteStore
from tasks.bot import BotConfig, SurfaceBot
from tasks.catalogue import Catalogue
from tasks.recorded_events import is_own_join
from tasks.sequence import PlatformChatSequence
from tasks.sync import SyncTask
from tasks.turns import TurnStreamer

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
DEADLINE = 10.0


class Recorder:
    """A handler that records entries, and whether each was in the ledger when handled."""

    def __init__(self, store: SqliteStore, *, crash_on: str | None = None) -> None:
        self.store = store
        self.handled: list[LedgerEntry] = []
        self.was_recorded: list[bool] = []
        self.crash_on = crash_on
        self._changed: anyio.Event | None = None

    async def __call__(self, entry: LedgerEntry) -> None:
        self.handled.append(entry)
        self.was_recorded.append(self.store.is_known(entry.event_id))
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if entry.content.get("body") == self.crash_on:
            raise ValueError("handler bug")

    @property
    def bodies(self) -> list[object]:
        return [e.content.get("body") for e in self.handled]

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(DEADLINE):
            while len(self.handled) < count:
                self._changed = self._changed or anyio.Event()
                await self._changed.wait()


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2  # the middle of a jitter range is no jitter


@pytest.fixture
def matrix() -> FakeMatrix:
    return FakeMatrix()


def sync_task(store: SqliteStore, matrix: FakeMatrix, handler: object) -> SyncTask:
    return SyncTask(
        store=store,
        matrix=matrix,
        handler=handler,  # type: ignore[arg-type]
        rng=NoJitter(),
    )


@asynccontextmanager
async def running(task: SyncTask) -> AsyncIterator[SyncTask]:
    async with anyio.create_task_group() as tg:
        await tg.start(task.run)
        yield task
        tg.cancel_scope.cancel()


async def wait_idle(task: SyncTask) -> None:
    assert task.dispatcher is not None
    with anyio.fail_after(DEADLINE):
        await task.dispatcher.wait_idle()


async def joined_room(store: SqliteStore, matrix: FakeMatrix) -> str:
    """A room the bot is in, with the checkpoint at "now" (the next sync is incremental)."""
    room_id = await matrix.create_room(name="chat", invite=[ALICE])
    matrix.user_joins(room_id, ALICE)
    store.record_batch([], matrix.sync_token())
    return room_id


# -- record, then dispatch ----------------------------------------------------------------


async def test_events_are_recorded_before_they_are_dispatched(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    event = matrix.add_message(room_id, ALICE, "hi")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(1)
        await wait_idle(task)

    assert [e.event_id for e in recorder.handled] == [event.event_id]
    assert recorder.was_recorded == [True]
    assert store.pending_entries() == []
    assert store.checkpoint() == matrix.sync_token(), "the checkpoint moved past the event"


async def test_pending_entries_are_handled_first_on_start(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="chat")
    left_over = [
        LedgerEntry.of_event(matrix.add_message(room_id, ALICE, f"old {n}")) for n in (1, 2)
    ]
    store.record_batch(left_over, matrix.sync_token())  # recorded, then the bot crashed
    matrix.add_message(room_id, ALICE, "new")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(3)
        await wait_idle(task)

    assert recorder.bodies == ["old 1", "old 2", "new"]
    assert store.pending_entries() == []


async def test_the_bots_own_events_are_not_recorded(store: SqliteStore, matrix: FakeMatrix) -> None:
    room_id = await joined_room(store, matrix)
    own = matrix.add_message(room_id, matrix.user_id, "I said this")
    theirs = matrix.add_message(room_id, ALICE, "and I this")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(1)
        await wait_idle(task)

    assert [e.event_id for e in recorder.handled] == [theirs.event_id]
    assert not store.is_known(own.event_id)


async def test_an_invite_is_recorded_as_an_invite_entry(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    store.record_batch([], matrix.sync_token())
    dm = matrix.add_invite(ALICE)
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(1)

    [entry] = recorder.handled
    assert (entry.type, entry.event_id) == (INVITE_ENTRY_TYPE, invite_entry_id(dm))
    assert (entry.room_id, entry.sender) == (dm, ALICE)
    assert entry.content == {"is_direct": True}


async def test_a_crashing_handler_does_not_stop_the_room(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    matrix.add_message(room_id, ALICE, "boom")
    matrix.add_message(room_id, ALICE, "after")
    recorder = Recorder(store, crash_on="boom")
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(2)
        await wait_idle(task)

    assert recorder.bodies == ["boom", "after"]
    assert store.pending_entries() == [], "a handler bug is not retried forever"


async def test_a_matrix_error_while_handling_is_retried(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    matrix.add_message(room_id, ALICE, "hi")
    failures = [MatrixRateLimited("slow down", retry_after=0.01)]
    recorder = Recorder(store)

    async def flaky(entry: LedgerEntry) -> None:
        await recorder(entry)
        if failures:
            raise failures.pop()

    task = sync_task(store, matrix, flaky)

    async with running(task):
        await recorder.wait_for(2)
        await wait_idle(task)

    assert recorder.bodies == ["hi", "hi"]
    assert store.pending_entries() == []


# -- shutdown -----------------------------------------------------------------------------


async def test_drain_lets_the_event_in_hand_finish_and_starts_no_new_one(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    other_room = await joined_room(store, matrix)
    matrix.add_message(room_id, ALICE, "in hand")
    matrix.add_message(room_id, ALICE, "queued behind it")
    started = anyio.Event()
    may_finish = anyio.Event()
    finished: list[object] = []

    async def slow_turn(entry: LedgerEntry) -> None:
        if entry.content.get("body") == "in hand":
            started.set()
            await may_finish.wait()
        finished.append(entry.content.get("body"))

    task = sync_task(store, matrix, slow_turn)
    drained = anyio.Event()

    async def drain() -> None:
        await task.drain()
        drained.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await tg.start(task.run)
            await started.wait()
            tg.start_soon(drain)
            matrix.add_message(other_room, ALICE, "arrived during the drain")
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            drained_early = drained.is_set()
            may_finish.set()
            await drained.wait()
        # the task group ended by itself: run() returned once the drain was done

    assert not drained_early
    assert finished == ["in hand"]
    pending = {e.content.get("body") for e in store.pending_entries()}
    # Recorded (maybe) but never started: left pending, handled after the restart.
    assert "queued behind it" in pending
    assert pending <= {"queued behind it", "arrived during the drain"}


# -- a database locked by another process ---------------------------------------------------


class CountingStore(SqliteStore):
    """Counts the attempts to record a batch that found the database locked."""

    busy_writes = 0
    third_busy_write: anyio.Event

    def record_batch(self, entries: Sequence[LedgerEntry], checkpoint: str) -> list[LedgerEntry]:
        try:
            return super().record_batch(entries, checkpoint)
        except StoreBusy:
            self.busy_writes += 1
            if self.busy_writes == 3:
                self.third_busy_write.set()
            raise


async def test_a_write_locked_database_does_not_freeze_the_event_loop(
    tmp_path: Path, matrix: FakeMatrix
) -> None:
    store = CountingStore(tmp_path / "locked.db")
    store.third_busy_write = anyio.Event()
    room_id = await joined_room(store, matrix)
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)
    other = sqlite3.connect(store.path, isolation_level=None)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    try:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(heartbeat)
                await tg.start(task.run)
                # Another process (a `surface` command, a backup) takes the write lock.
                other.execute("BEGIN IMMEDIATE")
                start = ticks
                event = matrix.add_message(room_id, ALICE, "while locked")
                await store.third_busy_write.wait()  # the write waits (and retries) ...
                ticks_while_locked = ticks - start  # ... while other tasks go on
                handled_while_locked = list(recorder.bodies)
                known_while_locked = store.is_known(event.event_id)
                other.execute("ROLLBACK")
                await recorder.wait_for(1)
                await wait_idle(task)
                tg.cancel_scope.cancel()
    finally:
        other.close()
        store.close()

    assert ticks_while_locked >= 3
    assert handled_while_locked == [] and not known_while_locked
    assert recorder.bodies == ["while locked"]
    assert store.busy_writes >= 3


async def test_marking_an_event_done_waits_out_a_locked_database(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    other = sqlite3.connect(store.path, isolation_level=None)

    async def lock_while_handling(entry: LedgerEntry) -> None:
        other.execute("BEGIN IMMEDIATE")  # taken after the event was recorded
        handled.set()

    handled = anyio.Event()
    task = sync_task(store, matrix, lock_while_handling)
    try:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                await tg.start(task.run)
                matrix.add_message(room_id, ALICE, "hi")
                await handled.wait()
                for _ in range(5):
                    await anyio.sleep(0.02)
                still_pending = [e.content.get("body") for e in store.pending_entries()]
                other.execute("ROLLBACK")
                await wait_idle(task)
                tg.cancel_scope.cancel()
    finally:
        other.close()

    assert still_pending == ["hi"]
    assert store.pending_entries() == [], "marked done once the lock was gone, not lost"


# -- gaps and catch-up --------------------------------------------------------------------


async def test_a_limited_timeline_is_filled_back_to_the_last_known_event(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="chat")
    handled_before = LedgerEntry.of_event(matrix.add_message(room_id, ALICE, "handled before"))
    store.record_batch([handled_before], matrix.sync_token())
    store.mark_done(handled_before.event_id)
    for n in range(70):  # more than one sync's timeline window
        matrix.add_message(room_id, ALICE, f"m{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(70)
        await wait_idle(task)

    assert recorder.bodies == [f"m{n}" for n in range(70)]


async def test_gap_filling_stops_at_the_bots_own_join(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = matrix.add_invite(ALICE, is_direct=False)
    for n in range(30):  # the group's history from before the bot came
        matrix.add_message(room_id, BOB, f"old{n}")
    store.record_batch([], matrix.sync_token())
    await matrix.join(room_id)
    for n in range(70):  # more than one sync's timeline window: the join is not in it
        matrix.add_message(room_id, ALICE, f"m{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(70)
        await wait_idle(task)

    assert recorder.bodies == [f"m{n}" for n in range(70)]


async def test_a_limited_timeline_holding_the_bots_join_is_not_filled(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    store.record_batch([], matrix.sync_token())
    room_id = matrix.add_invite(ALICE, is_direct=False)
    for n in range(60):  # before the join, and more than the window holds
        matrix.add_message(room_id, BOB, f"old{n}")
    await matrix.join(room_id)
    for n in range(3):
        matrix.add_message(room_id, ALICE, f"new{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(3)
        await wait_idle(task)

    assert recorder.bodies == ["new0", "new1", "new2"]


async def test_a_gap_cut_at_the_page_limit_is_logged_with_counts(
    store: SqliteStore, matrix: FakeMatrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.backfill.MAX_BACKFILL_PAGES", 2)
    room_id = await matrix.create_room(name="chat")
    store.record_batch([], matrix.sync_token())
    for n in range(300):  # 50 in the window, 200 in two pages, 50 never reached
        matrix.add_message(room_id, ALICE, f"m{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    with capture_logs() as logs:
        async with running(task):
            await recorder.wait_for(250)
            await wait_idle(task)

    assert recorder.bodies == [f"m{n}" for n in range(50, 300)]
    [cut] = [log for log in logs if log["event"] == "sync.backfill_truncated"]
    assert (cut["room_id"], cut["purpose"], cut["pages"], cut["events"]) == (
        room_id,
        "gap",
        2,
        200,
    )
    assert cut["log_level"] == "warning"


async def test_a_catch_up_cut_at_the_page_limit_is_logged_with_counts(
    store: SqliteStore, matrix: FakeMatrix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.backfill.MAX_BACKFILL_PAGES", 1)
    room_id = await matrix.create_room(name="chat", invite=[ALICE])
    store.put_room(
        RoomRecord(room_id=room_id, room_type=RoomType.CHAT, matrix_user_id=ALICE, chat_id="C1")
    )
    for n in range(200):  # no answer and no join in reach: the catch-up cannot anchor
        matrix.add_message(room_id, ALICE, f"u{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    with capture_logs() as logs:
        async with running(task):
            await recorder.wait_for(150)
            await wait_idle(task)

    [cut] = [log for log in logs if log["event"] == "sync.backfill_truncated"]
    assert (cut["room_id"], cut["purpose"], cut["pages"], cut["events"]) == (
        room_id,
        "catch-up",
        1,
        150,
    )


async def test_a_fresh_database_answers_only_what_is_unanswered(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="chat", invite=[ALICE])
    store.put_room(
        RoomRecord(room_id=room_id, room_type=RoomType.CHAT, matrix_user_id=ALICE, chat_id="C1")
    )
    answered = matrix.add_message(room_id, ALICE, "answered")
    matrix.add_message(room_id, matrix.user_id, "reply", **{REPLY_TO_FIELD: answered.event_id})
    for n in range(60):  # pushes the answer out of the first window: the task pages back
        matrix.add_message(room_id, ALICE, f"u{n}")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(60)
        await wait_idle(task)

    assert recorder.bodies == [f"u{n}" for n in range(60)]
    assert matrix.sync_calls[0].since is None


async def test_a_sync_token_the_server_refuses_starts_over_from_a_full_sync(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="chat", invite=[ALICE])
    store.put_room(
        RoomRecord(room_id=room_id, room_type=RoomType.CHAT, matrix_user_id=ALICE, chat_id="C1")
    )
    answered = matrix.add_message(room_id, ALICE, "answered")
    matrix.add_message(room_id, matrix.user_id, "reply", **{REPLY_TO_FIELD: answered.event_id})
    store.record_batch([LedgerEntry.of_event(answered)], matrix.sync_token())
    store.mark_done(answered.event_id)
    matrix.add_message(room_id, ALICE, "missed 1")
    matrix.add_message(room_id, ALICE, "missed 2")
    # The server was reset: it no longer knows the stored token.
    matrix.fail["sync"] = [MatrixSyncTokenInvalid("M_UNKNOWN: Invalid stream token", status=400)]
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(2)
        await wait_idle(task)

    assert recorder.bodies == ["missed 1", "missed 2"]  # and "answered" not again
    assert [(c.since, c.full_state) for c in matrix.sync_calls[1:2]] == [(None, True)]
    assert store.checkpoint() == matrix.sync_token()


async def test_a_fresh_database_ignores_unmanaged_rooms_history(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="somewhere")
    matrix.add_message(room_id, ALICE, "old chatter")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await matrix.wait_for_sync_calls(2)
        live = matrix.add_message(room_id, ALICE, "new")
        await recorder.wait_for(1)

    assert [e.event_id for e in recorder.handled] == [live.event_id]


# -- order and concurrency ----------------------------------------------------------------


class GatedPlatform(EchoPlatform):
    """The echo agent, but a turn whose text has a gate waits until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, anyio.Event] = {}
        self.started: dict[str, anyio.Event] = {}

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        if turn.text in self.started:
            self.started[turn.text].set()
        if turn.text in self.gates:
            await self.gates[turn.text].wait()
        async for event in super().send_turn(turn):
            yield event


async def test_one_rooms_events_run_in_order_while_rooms_run_concurrently(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    platform = GatedPlatform()
    bot = SurfaceBot(
        store=store,
        matrix=matrix,
        platform=platform,
        registry=AgentRegistry([AgentEntry(id="echo", name="Echo")]),
        sequence=PlatformChatSequence(store, matrix),
        catalogue=Catalogue(),
        config=BotConfig(),
        streamer=TurnStreamer(matrix, platform, Catalogue(), edit_interval=60.0),
    )
    for user in (ALICE, BOB):
        await bot.onboard(user, trigger=f"$onboard-{user}", dm_room_id=None)
    room_a = store.find_chat_room(ALICE, "C1")
    room_b = store.find_chat_room(BOB, "C1")
    assert room_a is not None
    assert room_b is not None
    store.record_batch([], matrix.sync_token())
    platform.gates = {"a1": anyio.Event(), "b1": anyio.Event()}
    platform.started = {text: anyio.Event() for text in ("a1", "a2", "b1")}
    a1 = matrix.add_message(room_a.room_id, ALICE, "a1")
    a2 = matrix.add_message(room_a.room_id, ALICE, "a2")
    matrix.add_message(room_b.room_id, BOB, "b1")
    task = SyncTask(store=store, matrix=matrix, handler=bot.handle)

    async with running(task):
        with anyio.fail_after(DEADLINE):
            await platform.started["a1"].wait()
            await platform.started["b1"].wait()  # room B runs while room A waits
        assert not platform.started["a2"].is_set(), "a2 must wait for a1"

        platform.gates["a1"].set()
        with anyio.fail_after(DEADLINE):
            await platform.started["a2"].wait()
        platform.gates["b1"].set()
        await wait_idle(task)

    replies = [m.content[REPLY_TO_FIELD] for m in matrix.sent if m.room_id == room_a.room_id]
    assert replies[-2:] == [a1.event_id, a2.event_id]
    assert store.pending_entries() == []


# -- sync failures and readiness ----------------------------------------------------------


class StartedAfter:
    """A task_status that records how many syncs had been asked for when it was called."""

    def __init__(self, matrix: FakeMatrix) -> None:
        self._matrix = matrix
        self.sync_calls: int | None = None
        self.value: object = None

    def started(self, value: object = None) -> None:
        assert self.sync_calls is None, "started() called twice"
        self.sync_calls = len(self._matrix.sync_calls)
        self.value = value


async def run_until_sync_calls(task: SyncTask, matrix: FakeMatrix, count: int) -> StartedAfter:
    """Run the task until it asked for `count` syncs; return what its task_status saw."""
    status = StartedAfter(matrix)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: task.run(task_status=status))
        with anyio.fail_after(DEADLINE):
            await matrix.wait_for_sync_calls(count)
        tg.cancel_scope.cancel()
    return status


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_unreachable_homeserver_is_retried_with_backoff_then_ready(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    store.record_batch([], matrix.sync_token())
    matrix.fail["sync"] = [MatrixUnreachable("502"), MatrixUnreachable("timeout")]
    task = sync_task(store, matrix, Recorder(store))

    status = await run_until_sync_calls(task, matrix, 4)

    calls = matrix.sync_calls
    assert calls[1].at - calls[0].at == pytest.approx(0.5)
    assert calls[2].at - calls[1].at == pytest.approx(1.0)
    assert calls[3].at - calls[2].at == pytest.approx(0.0)
    # Not ready while failing (no long poll yet); ready after the first success.
    assert [c.timeout_ms for c in calls[:4]] == [0, 0, 0, 30_000]
    assert status.sync_calls == 3


async def test_a_rate_limited_sync_waits_as_told(store: SqliteStore, matrix: FakeMatrix) -> None:
    store.record_batch([], matrix.sync_token())
    matrix.fail["sync"] = [MatrixRateLimited("slow down", retry_after=0.02)]
    task = sync_task(store, matrix, Recorder(store))

    status = await run_until_sync_calls(task, matrix, 3)

    calls = matrix.sync_calls
    assert calls[1].at - calls[0].at >= 0.02
    assert status.sync_calls == 2


async def test_started_only_once_caught_up_with_the_initial_batch_recorded_first(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await matrix.create_room(name="chat", invite=[ALICE])
    matrix.user_joins(room_id, ALICE)
    store.put_room(
        RoomRecord(room_id=room_id, room_type=RoomType.CHAT, matrix_user_id=ALICE, chat_id="C1")
    )
    matrix.add_message(room_id, ALICE, "before the snapshot")
    snapshot = await matrix.sync(None, timeout_ms=0, full_state=True)
    matrix.add_message(room_id, ALICE, "after the snapshot")
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)
    status = StartedAfter(matrix)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: task.run(snapshot, task_status=status))
        await recorder.wait_for(2)
        with anyio.fail_after(DEADLINE):
            await matrix.wait_for_sync_calls(3)  # the snapshot's, the catch-up, a long poll
        tg.cancel_scope.cancel()

    # The snapshot is caught up from, not asked for again; ready after one more sync.
    assert [c.since is None for c in matrix.sync_calls] == [True, False, False]
    assert [c.timeout_ms for c in matrix.sync_calls[1:]] == [0, 30_000]
    assert status.sync_calls == 2
    assert recorder.bodies == ["before the snapshot", "after the snapshot"]


async def test_an_auth_error_from_sync_is_fatal(store: SqliteStore, matrix: FakeMatrix) -> None:
    store.record_batch([], matrix.sync_token())
    matrix.fail["sync"] = [MatrixAuthError("M_UNKNOWN_TOKEN")]
    task = sync_task(store, matrix, Recorder(store))

    with pytest.raises(ExceptionGroup) as raised:
        async with anyio.create_task_group() as tg:
            await tg.start(task.run)

    assert raised.value.subgroup(MatrixAuthError) is not None


def test_only_a_membership_change_counts_as_the_bots_join() -> None:
    def member(prev: object) -> MatrixEvent:
        unsigned = {"prev_content": prev} if prev is not None else {}
        return MatrixEvent(
            event_id="$j",
            room_id="!r:x",
            sender="@bot:x",
            type="m.room.member",
            content={"membership": "join", "displayname": "Bot"},
            state_key="@bot:x",
            unsigned=unsigned,
        )

    assert is_own_join(member(None), "@bot:x")
    assert is_own_join(member({"membership": "invite"}), "@bot:x")
    assert not is_own_join(member({"membership": "join"}), "@bot:x")  # a profile change
    assert not is_own_join(member(None), "@other:x")


# -- what is recorded: messages, edits, reactions (issue 18) ------------------------------


async def test_user_reactions_and_edits_are_recorded_but_not_the_bots_own(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    room_id = await joined_room(store, matrix)
    asked = matrix.add_message(room_id, ALICE, "question")
    annotation = {"m.relates_to": {"rel_type": "m.annotation", "event_id": asked.event_id}}
    own = matrix.add_event(room_id, matrix.user_id, "m.reaction", {**annotation})
    reaction = matrix.add_event(room_id, ALICE, "m.reaction", {**annotation})
    edited: JsonDict = {
        "msgtype": "m.text",
        "body": "* question?",
        "m.new_content": {"msgtype": "m.text", "body": "question?"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": asked.event_id},
    }
    edit = matrix.add_event(room_id, ALICE, "m.room.message", edited)
    recorder = Recorder(store)
    task = sync_task(store, matrix, recorder)

    async with running(task):
        await recorder.wait_for(3)
        await wait_idle(task)

    assert [e.event_id for e in recorder.handled] == [
        asked.event_id,
        reaction.event_id,
        edit.event_id,
    ]
    assert not store.is_known(own.event_id)


async def test_each_sync_that_came_back_is_reported(store: SqliteStore, matrix: FakeMatrix) -> None:
    room_id = await joined_room(store, matrix)
    synced: list[str] = []
    recorder = Recorder(store)
    task = SyncTask(
        store=store,
        matrix=matrix,
        handler=recorder,
        rng=NoJitter(),
        on_synced=lambda: synced.append(store.checkpoint() or ""),
    )

    async with running(task):
        assert len(synced) == 1, "the catch-up sync, before started"
        matrix.add_message(room_id, ALICE, "hi")
        await recorder.wait_for(1)
        with anyio.fail_after(DEADLINE):
            while True:
                if len(synced) >= 2:
                    break
                await anyio.sleep(0.001)

    assert synced[-1] == matrix.sync_token(), "reported once its batch was recorded"


@pytest.mark.virtual_time
async def test_what_follows_a_wake_up_comes_back_in_one_sync(
    store: SqliteStore, matrix: FakeMatrix, time_is_virtual: bool
) -> None:
    coalesce = 1.0 if time_is_virtual else 0.2
    room_id = await joined_room(store, matrix)
    recorder = Recorder(store)
    task = SyncTask(store=store, matrix=matrix, handler=recorder, coalesce=coalesce)

    async with running(task):
        matrix.add_message(room_id, ALICE, "first")
        await recorder.wait_for(1)
        calls = len(matrix.sync_calls)
        matrix.add_message(room_id, ALICE, "second")  # within the pause
        matrix.add_message(room_id, ALICE, "third")
        await recorder.wait_for(3)

    assert recorder.bodies == ["first", "second", "third"]
    woken, next_call = matrix.sync_calls[calls - 1].at, matrix.sync_calls[calls].at
    assert next_call - woken >= coalesce * 0.9, "the next long poll waited"
