"""Startup reconciliation: rebuild the local routing cache from Matrix.

One full-state sync (a short timeline window, see below), then the pure
rebuild decision (tasks/rebuild.py), then one write per record.
Creates no room and makes no per-room request: everything comes from that one
sync response. Idempotent: a second run reports no changes.

Why not timeline limit 0: Synapse (1.163) computes a full sync's `state` as
the state after the room's *last event*, not the room's current state; when
two events were sent at once (the bot links a chat into the Space while the
user joins; the bot rewrites a marker while the user types) the DAG forks and
the other branch's state event is missing (see the FIXME in Synapse's
`get_state_ids_at`; MSC4222 `state_after` would fix it but is experimental).
A fork only exists at the tip of a room: the next event merges it. So a short
timeline window holds the missing events, and folding the state events of both
sections in stream order (tasks/rebuild.current_state) gives the current state.

When the local checkpoint is gone (fresh or wiped database), the same sync asks
for a longer window, so the sync task can catch up on unanswered messages
without another full sync.
"""

from __future__ import annotations

import structlog

from contracts.markers import SEQUENCE_ACCOUNT_DATA_TYPE, SequenceHighWater
from contracts.matrix import MatrixPort, SyncBatch
from contracts.store import Store
from tasks.rebuild import LocalState, RebuildPlan, ReconcileReport, plan_rebuild

log = structlog.get_logger(__name__)

CATCH_UP_WINDOW = 30
STATE_WINDOW = 10


def local_state(store: Store) -> LocalState:
    users = {u.matrix_user_id: u for u in store.list_users()}
    rooms = {r.room_id: r for r in store.list_rooms()}
    chats = {(c.matrix_user_id, c.chat_id): c for u in users for c in store.list_chats(u)}
    return LocalState(
        users=users, rooms=rooms, chats=chats, sequence_next=store.sequence_state().next_value
    )


def snapshot_window(*, fresh: bool) -> int:
    """The timeline window of the full-state sync: longer when the checkpoint is gone."""
    return CATCH_UP_WINDOW if fresh else STATE_WINDOW


def high_water_of(batch: SyncBatch) -> int:
    content = batch.account_data.get(SEQUENCE_ACCOUNT_DATA_TYPE)
    if not content:
        return 0
    try:
        return SequenceHighWater.model_validate(content).reserved_through
    except ValueError:
        return 0


def apply_plan(store: Store, plan: RebuildPlan) -> None:
    """Write a rebuild plan in one transaction: a crash leaves all of it or none."""
    store.apply_rebuild(
        users=plan.users,
        rooms=plan.rooms,
        chats=plan.chats,
        origins=plan.origins,
        sequence_floor=plan.sequence_floor,
    )


async def reconcile(
    store: Store,
    matrix: MatrixPort,
    *,
    dry_run: bool = False,
    snapshot: SyncBatch | None = None,
) -> tuple[ReconcileReport, SyncBatch]:
    """Rebuild missing or disagreeing records from the bot's markers; returns report and batch.

    `snapshot`, when given, must be the answer to the very sync this would ask (full
    state, `snapshot_window` for this store, taken just now); it is used instead.
    With dry_run nothing is written. Raises MatrixError when the sync fails.
    """
    batch = snapshot or await matrix.sync(
        None,
        timeout_ms=0,
        full_state=True,
        timeline_limit=snapshot_window(fresh=store.checkpoint() is None),
    )
    rooms = {room_id: room.state for room_id, room in batch.joined.items()}
    plan = plan_rebuild(
        rooms, local_state(store), bot_user_id=matrix.user_id, high_water=high_water_of(batch)
    )
    if not dry_run:
        apply_plan(store, plan)
    report = plan.report
    log.info("reconcile.done", dry_run=dry_run, **report.as_dict())
    return report, batch
