"""runtime/reconciliation.py: the one-shot start-up task and what it hands the sync task."""

from __future__ import annotations

from typing import Any

import anyio
from fakes import FakeMatrix

from contracts.matrix import SyncBatch
from runtime.matrix.parse import LoadedSync
from runtime.reconciliation import Reconciliation
from runtime.store import SqliteStore
from tasks.reconcile import CATCH_UP_WINDOW, STATE_WINDOW

BOT = "@bot:example.org"


class FakePrefetch:
    """SnapshotPrefetch's `take`: answers once, records what it was asked."""

    def __init__(self, body: Any, *, state_after: bool = False) -> None:
        self.loaded = None if body is None else LoadedSync.from_json(body)
        self.asked: list[tuple[str, int]] = []
        self.state_after = state_after
        self.remembered: list[bool] = []

    def remember_state_after(self, answered: bool) -> None:
        self.remembered.append(answered)
        self.state_after = answered

    def take(self, *, user_id: str, timeline_limit: int) -> LoadedSync | None:
        self.asked.append((user_id, timeline_limit))
        loaded, self.loaded = self.loaded, None
        return loaded


async def started_value(reconciliation: Reconciliation) -> SyncBatch | None:
    async with anyio.create_task_group() as tg:
        value: SyncBatch | None = await tg.start(reconciliation.run)
    return value


async def test_a_fresh_store_hands_the_snapshot_batch_on(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)

    batch = await started_value(Reconciliation(store, matrix))

    assert batch is not None
    assert batch.next_batch == matrix.sync_token()
    [call] = matrix.sync_calls
    assert (call.since, call.full_state, call.timeline_limit) == (None, True, CATCH_UP_WINDOW)


async def test_a_store_with_a_checkpoint_hands_on_nothing(store: SqliteStore) -> None:
    store.record_batch([], "s1")
    matrix = FakeMatrix(user_id=BOT)

    assert await started_value(Reconciliation(store, matrix)) is None
    assert store.checkpoint() == "s1"


async def test_a_fitting_prefetched_snapshot_is_used_instead_of_asking(
    store: SqliteStore,
) -> None:
    matrix = FakeMatrix(user_id=BOT)
    prefetch = FakePrefetch({"next_batch": "s9", "rooms": {}})
    reconciliation = Reconciliation(store, matrix, prefetch)  # type: ignore[arg-type]

    batch = await started_value(reconciliation)

    assert batch is not None
    assert batch.next_batch == "s9"
    assert matrix.sync_calls == []
    assert prefetch.asked == [(BOT, CATCH_UP_WINDOW)]


async def test_without_a_prefetched_answer_reconciliation_asks(store: SqliteStore) -> None:
    store.record_batch([], "s1")
    matrix = FakeMatrix(user_id=BOT)
    prefetch = FakePrefetch(None)

    await started_value(Reconciliation(store, matrix, prefetch))  # type: ignore[arg-type]

    assert prefetch.asked == [(BOT, STATE_WINDOW)]
    [call] = matrix.sync_calls
    assert call.timeline_limit == STATE_WINDOW


def joined_room_answer(*, after_key: str | None) -> dict[str, Any]:
    marker = {"type": "m.room.name", "state_key": "", "event_id": "$n", "sender": BOT}
    room: dict[str, Any] = {"timeline": {"events": []}}
    room[after_key or "state"] = {"events": [{**marker, "content": {"name": "x"}}]}
    return {"next_batch": "s9", "rooms": {"join": {"!r:example.org": room}}}


async def test_an_intact_store_asks_window_0_when_the_server_answered_state_after(
    store: SqliteStore,
) -> None:
    store.record_batch([], "s1")
    matrix = FakeMatrix(user_id=BOT, state_after=True)
    prefetch = FakePrefetch(None, state_after=True)

    await started_value(Reconciliation(store, matrix, prefetch))  # type: ignore[arg-type]

    assert prefetch.asked == [(BOT, 0)]
    assert [call.timeline_limit for call in matrix.sync_calls] == [0]


async def test_a_snapshot_with_state_after_is_remembered(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    answer = joined_room_answer(after_key="org.matrix.msc4222.state_after")
    prefetch = FakePrefetch(answer)

    await started_value(Reconciliation(store, matrix, prefetch))  # type: ignore[arg-type]

    assert prefetch.remembered == [True]


async def test_a_window_0_answer_without_state_after_is_asked_again_with_the_state_window(
    store: SqliteStore,
) -> None:
    store.record_batch([], "s1")
    matrix = FakeMatrix(user_id=BOT)
    prefetch = FakePrefetch(joined_room_answer(after_key=None), state_after=True)

    await started_value(Reconciliation(store, matrix, prefetch))  # type: ignore[arg-type]

    assert prefetch.asked == [(BOT, 0)]
    assert [call.timeline_limit for call in matrix.sync_calls] == [STATE_WINDOW]
