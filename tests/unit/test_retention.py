"""Ledger retention: the pruning task deletes handled entries past the retention period."""

from __future__ import annotations

import time

import anyio
import pytest

from contracts.store import LedgerEntry
from runtime.store import SqliteStore
from tasks.retention import DAY, LedgerPruner


def _entry(event_id: str, room_id: str) -> LedgerEntry:
    return LedgerEntry(
        event_id=event_id,
        room_id=room_id,
        sender="@alice:example.org",
        type="m.room.message",
        content={"msgtype": "m.text", "body": "hi"},
    )


def test_entries_done_longer_ago_than_the_retention_are_pruned(store: SqliteStore) -> None:
    store.record_batch([_entry("$old", "!a:x"), _entry("$new", "!a:x")], "s1")
    store.mark_done("$old")
    store.mark_done("$new")
    clock = [0.0]
    pruner = LedgerPruner(store, retention_days=7, now=lambda: clock[0])

    clock[0] = time.time() + 6 * DAY
    assert pruner.prune_once() == 0
    clock[0] = time.time() + 8 * DAY
    assert pruner.prune_once() == 1
    assert not store.is_known("$old")
    assert store.is_known("$new")  # the room's newest stays


class FailingStore:
    def prune_ledger(self, done_before: float) -> int:
        raise RuntimeError("database is locked")


def test_a_failed_pass_is_logged_and_reported_as_nothing_pruned() -> None:
    pruner = LedgerPruner(FailingStore(), retention_days=1)  # type: ignore[arg-type]

    assert pruner.prune_once() == 0


@pytest.mark.virtual_time
async def test_the_pruner_reports_started_at_once_and_passes_every_interval(
    time_is_virtual: bool,
) -> None:
    calls: list[float] = []
    third_pass = anyio.Event()

    class CountingStore:
        def prune_ledger(self, done_before: float) -> int:
            calls.append(done_before)
            if len(calls) == 3:
                third_pass.set()
            return 0

    interval = 60.0 if time_is_virtual else 0.01
    pruner = LedgerPruner(CountingStore(), retention_days=1, interval=interval)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(pruner.run)
        assert len(calls) == 1  # the first pass runs at once
        await third_pass.wait()
        tg.cancel_scope.cancel()

    assert len(calls) == 3


def test_a_retention_of_zero_days_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="retention_days"):
        LedgerPruner(store, retention_days=0)
