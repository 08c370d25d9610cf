"""Start-up while another process holds the database's write lock: wait, do not fail."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from contracts.matrix import SyncBatch
from contracts.store import StoreBusy
from runtime.app import reconcile_when_unlocked


class LockedAtFirst:
    """A reconciliation whose first writes find the database locked."""

    def __init__(self, busy_runs: int) -> None:
        self.busy_runs = busy_runs
        self.runs = 0

    async def run(
        self, *, task_status: TaskStatus[SyncBatch | None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.runs += 1
        if self.runs <= self.busy_runs:
            raise StoreBusy("locked")
        task_status.started(None)


async def test_reconciliation_waits_out_a_locked_database() -> None:
    reconciliation = LockedAtFirst(busy_runs=2)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            value = await tg.start(reconcile_when_unlocked, reconciliation)

    assert value is None
    assert reconciliation.runs == 3
