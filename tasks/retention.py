"""Ledger retention: handled entries are pruned once they are older than the retention period.

A handled entry already keeps no message body (`Store.mark_done` drops it); only
its event id stays, so that an event seen again is not handled twice. Events
come again only soon after (an overlapping sync, gap filling), so after the
retention period (`SURFACE_LEDGER_RETENTION_DAYS`) the id goes too. Each room's
newest entry stays (see `Store.prune_ledger`). Runs as a small supervised task
that nothing waits for; a failed pass (a locked database) is logged and tried
again at the next interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import anyio.abc
import structlog

from contracts.store import Store

log = structlog.get_logger(__name__)

PRUNE_INTERVAL = 3600.0  # seconds between passes
DAY = 86_400.0


class LedgerPruner:
    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        interval: float = PRUNE_INTERVAL,
        now: Callable[[], float] = time.time,
    ) -> None:
        if retention_days <= 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        self._store = store
        self._retention = retention_days * DAY
        self._interval = interval
        self._now = now

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Prune now and then every `interval` seconds until cancelled."""
        task_status.started()
        while True:
            self.prune_once()
            await anyio.sleep(self._interval)

    def prune_once(self) -> int:
        """One pass; returns how many entries were deleted (0 when the pass failed)."""
        cutoff = self._now() - self._retention
        try:
            removed = self._store.prune_ledger(cutoff)
        except Exception as exc:  # a locked or failing database: the next pass tries again
            log.warning("ledger.prune_failed", error=type(exc).__name__, reason=str(exc)[:200])
            return 0
        if removed:
            log.info("ledger.pruned", removed=removed, retention_days=self._retention / DAY)
        return removed
