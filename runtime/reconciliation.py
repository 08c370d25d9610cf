"""Reconciliation as the supervisor runs it: the one-shot task before all others.

The rebuild itself is :func:`tasks.reconcile.reconcile`. This adds what only the runtime
has: the full-state sync ``surface run`` sent before its heavy imports
(runtime/matrix/snapshot.py), used when it is the very sync reconciliation would ask
for, and the hand-off to the sync task. ``task_status.started(batch)`` passes on the
snapshot's batch when the store has no checkpoint (a fresh or wiped database: the sync
task catches up from it instead of asking for a second full sync), and None otherwise
(the sync task goes on from its checkpoint). The supervisor gives that value to the sync
task's first run (``TaskSpec.takes_from``). Whether the snapshot came with MSC4222
``state_after`` is remembered through the prefetch (a window of 0 next time, see
tasks/reconcile.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import anyio
from anyio.abc import TaskStatus

from contracts.matrix import MatrixPort, SyncBatch
from contracts.store import Store
from runtime.legacy_db import MigrationResult
from runtime.matrix.parse import sync_batch
from runtime.matrix.snapshot import SnapshotPrefetch
from tasks.reconcile import reconcile, snapshot_window

__all__ = ["Reconciliation"]


@dataclass(frozen=True)
class Reconciliation:
    store: Store
    matrix: MatrixPort
    prefetch: SnapshotPrefetch | None = None
    default_agent_id: str | None = None
    migration: MigrationResult | None = None

    async def run(
        self, *, task_status: TaskStatus[SyncBatch | None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        snapshot = await self._prefetched_snapshot()
        migration = self.migration
        prefetch = self.prefetch
        _report, batch = await reconcile(
            self.store,
            self.matrix,
            snapshot=snapshot,
            default_agent_id=self.default_agent_id,
            migrated=migration.migrated if migration else 0,
            unmapped=migration.imported.unmapped if migration else (),
            state_after=prefetch is not None and prefetch.state_after,
        )
        if prefetch is not None and batch.joined:
            prefetch.remember_state_after(batch.state_after)
        task_status.started(batch if self.store.checkpoint() is None else None)

    async def _prefetched_snapshot(self) -> SyncBatch | None:
        """The answer of the sync sent before the imports, if it fits.

        `SnapshotPrefetch.take` answers once: a second run would ask afresh.
        """
        prefetch = self.prefetch
        if prefetch is None:
            return None
        window = snapshot_window(
            fresh=self.store.checkpoint() is None, state_after=prefetch.state_after
        )
        user_id = self.matrix.user_id
        loaded = await anyio.to_thread.run_sync(
            lambda: prefetch.take(user_id=user_id, timeline_limit=window),
            abandon_on_cancel=True,
        )
        if loaded is None:
            return None
        # Through the adapter when it has a crypto side: the snapshot's to-device
        # messages and key counts must reach the crypto store before any checkpoint
        # moves past them.
        batch_from_sync = getattr(self.matrix, "batch_from_sync", None)
        if batch_from_sync is not None:
            return cast(SyncBatch, await batch_from_sync(loaded))
        return sync_batch(loaded, user_id)
