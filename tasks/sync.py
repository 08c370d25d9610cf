"""The sync task: long-poll /sync, record events durably, dispatch them per room.

Exactly-once: the events of a sync response the bot acts on (user messages,
edits among them, and user reactions: tasks/recorded_events.py) and the new
checkpoint are stored in one transaction (ledger); an event is marked done after it
was handled; on start, pending entries from before a crash are handled first. One room's
events run in order; different rooms run concurrently, bounded.

Which events are recorded: tasks/recorded_events.py. Gaps: a limited timeline is
filled by paging back until an event already recorded or the bot's own join, and a
fresh start catches up on what nobody answered (tasks/backfill.py); messages from
before the bot joined a room are never handled.

Readiness: ``run`` reports started once caught up: pending entries resubmitted,
the initial batch (reconciliation's snapshot, handed on by the supervisor after a
fresh start) recorded, and one zero-timeout sync recorded; then it long-polls.

Coalescing: with ``coalesce`` (SYNC_COALESCE_S in the runtime) the next long poll
starts that long after the last one came back, so the wake-ups that follow an event
(the bot's own answers, the rest of a burst) cost one sync, not one each; the
handlers run meanwhile. A message that arrives in that moment waits for it at most.

After each sync that came back (recorded and dispatched) ``on_synced`` is called, if
given: the runtime's RoomSignals waits for it before a read receipt
(tasks/room_signals.py).

Shutdown: ``drain`` stops the sync loop and the dispatcher takes no new entry;
it returns once the entries being handled are done (the supervisor bounds it by
its grace period, then cancels). Entries recorded but not started stay pending
in the ledger and are handled after the restart.

Errors: this module owns the homeserver's retries for the sync loop and for
event handling (tasks/retry.py): MatrixUnreachable / MatrixRateLimited are
retried with backoff, never sooner than a rate limit's ``retry_after`` (our own
loop, not nio's sync_forever); another MatrixError fails the event (it is
marked done); MatrixAuthError from /sync propagates (fatal for this session:
the runtime logs in again when it can, runtime/app.py). A sync token the server
refuses (MatrixSyncTokenInvalid) starts over: a full-state sync, reconciliation
against it, and the catch-up of a fresh start. StoreBusy (another
process holds the database's write lock) is retried the same way, for recording
a batch, for handling an event and for marking it done.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import anyio
import anyio.abc
import structlog

from contracts.matrix import (
    MatrixError,
    MatrixPort,
    MatrixRateLimited,
    MatrixSyncTokenInvalid,
    MatrixUnreachable,
    SyncBatch,
)
from contracts.metrics import Metrics, NullMetrics
from contracts.store import LedgerEntry, Store, StoreBusy
from tasks.backfill import catch_up_unanswered, fill_gap
from tasks.reconcile import reconcile
from tasks.recorded_events import invite_entries, live_messages, own_join_index
from tasks.retry import Backoff, retry

log = structlog.get_logger(__name__)

Handler = Callable[[LedgerEntry], Awaitable[None]]

SYNC_TIMEOUT_MS = 30_000
# After a long poll came back, the next one waits this long (the runtime's setting;
# SyncTask's default is 0): what follows an event (the bot's own answers to it, the
# rest of a burst) then comes back in one answer instead of a wake-up and a sync each.
SYNC_COALESCE_S = 0.05
TIMELINE_LIMIT = 50
# This module owns the homeserver's retries for /sync and for handling an event
# (tasks/retry.py): unbounded, the bot has nothing better to do than wait.
SYNC_BACKOFF = Backoff(initial=0.5, factor=2.0, max=30.0, jitter=0.1)
EVENT_BACKOFF = Backoff(initial=0.5, factor=2.0, max=30.0, jitter=0.1)
# The database's write lock held by another process (StoreBusy): retried, unbounded,
# so the event loop never waits on SQLite's busy handler (contracts/store.py).
STORE_BACKOFF = Backoff(initial=0.05, factor=2.0, max=5.0, jitter=0.1)


class RoomDispatcher:
    """Runs entries per room in order, rooms concurrently up to a limit."""

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        handler: Handler,
        store: Store,
        *,
        concurrency: int,
        metrics: Metrics,
    ) -> None:
        self._tg = tg
        self._handler = handler
        self._store = store
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._queues: dict[str, deque[LedgerEntry]] = {}
        self._metrics = metrics
        self._idle = anyio.Event()
        self._idle.set()
        self._closed = False

    def submit(self, entry: LedgerEntry) -> None:
        if self._closed:
            return  # recorded as pending: handled after the restart
        queue = self._queues.get(entry.room_id)
        if queue is not None:
            queue.append(entry)
            return
        self._queues[entry.room_id] = deque([entry])
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._tg.start_soon(self._drain, entry.room_id, name=f"room:{entry.room_id}")

    @property
    def busy_rooms(self) -> int:
        return len(self._queues)

    async def wait_idle(self) -> None:
        """Wait until every submitted entry was handled (after `close`: every started one)."""
        await self._idle.wait()

    def close(self) -> None:
        """Start no new entry; the ones being handled run on. Idempotent."""
        self._closed = True

    async def _drain(self, room_id: str) -> None:
        queue = self._queues[room_id]
        try:
            while queue and not self._closed:
                entry = queue[0]
                async with self._limiter:
                    if self._closed:
                        break
                    await self._handle_with_retry(entry)
                queue.popleft()
        finally:
            del self._queues[room_id]
            if not self._queues:
                self._idle.set()

    async def _handle_with_retry(self, entry: LedgerEntry) -> None:
        started = anyio.current_time()
        try:
            await retry(
                partial(self._handler, entry),
                EVENT_BACKOFF,
                retry_on=(MatrixUnreachable, MatrixRateLimited, StoreBusy),
                operation="event",
                log_fields={"event_id": entry.event_id, "room_id": entry.room_id},
            )
        except MatrixError as exc:
            # The homeserver refused (forbidden, not found): retrying cannot help.
            log.error("event.failed", event_id=entry.event_id, error=str(exc))
            self._metrics.event_handled(entry.type, "failed")
        except Exception:
            log.exception("event.crashed", event_id=entry.event_id, room_id=entry.room_id)
            self._metrics.event_handled(entry.type, "crashed")
        else:
            self._metrics.event_handled(entry.type, "ok")
            self._metrics.reply_latency(anyio.current_time() - started)
        await retry(
            partial(_mark_done, self._store, entry.event_id),
            STORE_BACKOFF,
            retry_on=StoreBusy,
            operation="ledger.mark_done",
            log_fields={"event_id": entry.event_id},
        )


class SyncTask:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixPort,
        handler: Handler,
        concurrency: int = 32,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        on_synced: Callable[[], None] | None = None,
        coalesce: float = 0.0,
    ) -> None:
        self._store = store
        self._on_synced = on_synced
        self._coalesce = coalesce
        self._matrix = matrix
        self._handler = handler
        self._concurrency = concurrency
        self._metrics = metrics or NullMetrics()
        self._rng = rng or random.Random()
        self.dispatcher: RoomDispatcher | None = None
        self._poll_scope: anyio.CancelScope | None = None
        self._draining = False

    async def drain(self) -> None:
        """Stop syncing and taking new events; return once the events in hand are handled."""
        self._draining = True
        if self._poll_scope is not None:
            self._poll_scope.cancel()
        if self.dispatcher is not None:
            self.dispatcher.close()
            await self.dispatcher.wait_idle()

    async def run(
        self,
        initial: SyncBatch | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sync until cancelled; ``initial`` is a batch to catch up from (see the module doc)."""
        async with anyio.create_task_group() as tg:
            dispatcher = RoomDispatcher(
                tg,
                self._handler,
                self._store,
                concurrency=self._concurrency,
                metrics=self._metrics,
            )
            self.dispatcher = dispatcher
            pending = self._store.pending_entries()
            if pending:
                log.info("sync.resume_pending", count=len(pending))
            for entry in pending:
                dispatcher.submit(entry)
            if initial is not None:
                await self.ingest(initial, dispatcher, initial=True)
                initial = None  # a full-state batch can be large: not kept while syncing
            with anyio.CancelScope() as self._poll_scope:
                if self._draining:
                    self._poll_scope.cancel()
                await self._loop(dispatcher, task_status)
            self._poll_scope = None
            dispatcher.close()  # drained: the task group waits for the entries in hand

    async def _loop(
        self, dispatcher: RoomDispatcher, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        caught_up = False
        while True:
            took = await retry(
                partial(self._sync_once, dispatcher, long_poll=caught_up),
                SYNC_BACKOFF,
                retry_on=(MatrixUnreachable, MatrixRateLimited),
                operation="sync",
                rng=self._rng,
            )
            self._metrics.sync_completed(took)
            if self._on_synced is not None:
                self._on_synced()
            if caught_up and self._coalesce > 0:
                await anyio.sleep(self._coalesce)
            if not caught_up:
                caught_up = True
                log.info("sync.caught_up", checkpoint_set=True)
                task_status.started()

    async def _sync_once(self, dispatcher: RoomDispatcher, *, long_poll: bool) -> float:
        """One /sync from the checkpoint, recorded and dispatched; returns the seconds it took."""
        since = self._store.checkpoint()
        started = anyio.current_time()
        try:
            batch = await self._matrix.sync(
                since,
                timeout_ms=SYNC_TIMEOUT_MS if long_poll else 0,
                timeline_limit=TIMELINE_LIMIT,
            )
        except MatrixSyncTokenInvalid as exc:
            # The server forgot our token (a reset, a restore): start over from a full
            # sync, reconcile against it, and catch up on what nobody answered.
            log.warning("sync.token_rejected", error=str(exc))
            _report, batch = await reconcile(self._store, self._matrix)
            since = None
        await self.ingest(batch, dispatcher, initial=since is None)
        return anyio.current_time() - started

    async def ingest(self, batch: SyncBatch, dispatcher: RoomDispatcher, *, initial: bool) -> None:
        """Record the batch's events with its checkpoint (one transaction), then dispatch."""
        entries = invite_entries(batch)
        for room_id, room in batch.joined.items():
            if initial:
                unanswered = await catch_up_unanswered(self._store, self._matrix, room_id, room)
                entries.extend(LedgerEntry.of_event(e) for e in unanswered)
            else:
                messages = live_messages(room, self._matrix.user_id)
                # The bot's join in this window: nothing before it is for the bot.
                joined_here = own_join_index(room.timeline, self._matrix.user_id) is not None
                if room.limited and not joined_here:
                    messages = await fill_gap(self._store, self._matrix, room, messages)
                entries.extend(LedgerEntry.of_event(e) for e in messages)
        new = await retry(
            partial(_record_batch, self._store, entries, batch.next_batch),
            STORE_BACKOFF,
            retry_on=StoreBusy,
            operation="ledger.record_batch",
        )
        if entries:
            log.info(
                "sync.recorded",
                events=len(entries),
                new=len(new),
                initial=initial,
                rooms=len(batch.joined),
            )
        for entry in new:
            dispatcher.submit(entry)


async def _mark_done(store: Store, event_id: str) -> None:
    store.mark_done(event_id)


async def _record_batch(
    store: Store, entries: Sequence[LedgerEntry], checkpoint: str
) -> list[LedgerEntry]:
    return store.record_batch(entries, checkpoint)
