"""Startup reconciliation: rebuild the local routing cache from Matrix.

One full-state sync (a short timeline window, see below), then the pure
rebuild decision (tasks/rebuild.py), then the records written in one transaction,
then the Matrix side of the plan: platform_chat_ids filled from the sequence,
markers written into adopted (marker-less, bot-created) Spaces and rooms and into
rooms whose id was filled, and missing or `via`-less Space links rewritten.
Creates no room and reads no per-room state: everything comes from that one
sync response. Idempotent: a second run reports no changes.

Why not timeline limit 0: Synapse (1.163) computes a full sync's `state` as
the state after the room's *last event*, not the room's current state; when
two events were sent at once (the bot links a chat into the Space while the
user joins; the bot rewrites a marker while the user types) the DAG forks and
the other branch's state event is missing (see the FIXME in Synapse's
`get_state_ids_at`; MSC4222 `state_after` would fix it but is experimental).
A fork only exists at the tip of a room: the next event merges it. So a short
timeline window holds the missing events, and folding the state events of both
sections in stream order (tasks/room_state.current_state) gives the current state.

When the local checkpoint is gone (fresh or wiped database), the same sync asks
for a longer window, so the sync task can catch up on unanswered messages
without another full sync.

MSC4222: the sync always asks for `state_after` (runtime/matrix/sync_query.py). A
server that honours it returns the state as of the end of the timeline, current at
a forked tip too, so the window is not needed for the state. Once the server is
known to honour it (`state_after=True`: the last snapshot said so, see
runtime/matrix/snapshot.py), a store with its checkpoint asks a window of 0: the sync
task goes on from the checkpoint and needs no events from here. A store without its
checkpoint still asks the catch-up window: those events are the messages sent while
the bot was down, which it answers from this sync (state_after keeps the state right
there too). If a window-0 answer comes without state_after (the server turned the
feature off), the state may miss a fork's branch: the sync is asked again with the
state window.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

import structlog

from contracts.markers import SEQUENCE_ACCOUNT_DATA_TYPE, SPACE_MARKER_TYPE, SequenceHighWater
from contracts.matrix import MatrixPort, MatrixRequestError, SyncBatch
from contracts.store import Store
from tasks.rebuild import plan_rebuild
from tasks.rebuild_plan import Conflict, LocalState, RebuildPlan, ReconcileReport
from tasks.rooms import write_room_marker
from tasks.sequence import PlatformChatSequence

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


def snapshot_window(*, fresh: bool, state_after: bool = False) -> int:
    """The timeline window of the full-state sync (see the module doc).

    Longer when the checkpoint is gone; 0 with the checkpoint when the server is known
    to answer MSC4222 `state_after`.
    """
    if fresh:
        return CATCH_UP_WINDOW
    return 0 if state_after else STATE_WINDOW


def high_water_of(batch: SyncBatch) -> int:
    content = batch.account_data.get(SEQUENCE_ACCOUNT_DATA_TYPE)
    if not content:
        return 0
    try:
        return SequenceHighWater.model_validate(content).reserved_through
    except ValueError:
        return 0


def apply_plan(store: Store, plan: RebuildPlan) -> None:
    """Write a rebuild plan's records in one transaction, then drop the rooms the bot left."""
    store.apply_rebuild(
        users=plan.users,
        rooms=plan.rooms,
        chats=plan.chats,
        origins=plan.origins,
        sequence_floor=plan.sequence_floor,
    )
    for room_id in plan.drop:
        store.delete_room(room_id)


async def apply_matrix_side(
    store: Store, matrix: MatrixPort, plan: RebuildPlan, sequence: PlatformChatSequence
) -> None:
    """Fill ids, write markers of adopted/filled rooms, repair links (after `apply_plan`).

    Ids first, so each marker carries its id; a stop half-way is finished by the next
    run (the filled id is kept locally and reused, see `plan_rebuild`). A room that
    refuses a write (M_FORBIDDEN: the bot lost its power there) is named as a conflict.
    """
    report = plan.report
    for room_id in plan.fill_ids:
        room = store.get_room(room_id)
        if room is None or room.platform_chat_id is not None:
            continue
        store.put_room(room.model_copy(update={"platform_chat_id": await sequence.allocate()}))
    for write in plan.space_markers:
        await _guarded(
            report,
            write.space_id,
            matrix.send_state(
                write.space_id, SPACE_MARKER_TYPE, write.marker.model_dump(mode="json")
            ),
        )
    for room_id in dict.fromkeys([*plan.room_markers, *plan.fill_ids]):
        room = store.get_room(room_id)
        if room is not None:
            await _guarded(report, room_id, write_room_marker(matrix, room))
    for link in plan.links:
        content = {**link.content, "via": [matrix.server_name]}
        await _guarded(
            report,
            link.room_id,
            matrix.send_state(link.room_id, link.event_type, content, state_key=link.state_key),
        )


async def _guarded(report: ReconcileReport, room_id: str, write: Awaitable[object]) -> None:
    try:
        await write
    except MatrixRequestError as exc:
        log.warning("reconcile.write_refused", room_id=room_id, error=str(exc))
        report.conflicts.append(Conflict(room_id, f"could not write state: {exc}"))


async def _snapshot(matrix: MatrixPort, window: int) -> SyncBatch:
    return await matrix.sync(None, timeout_ms=0, full_state=True, timeline_limit=window)


async def reconcile(
    store: Store,
    matrix: MatrixPort,
    *,
    dry_run: bool = False,
    snapshot: SyncBatch | None = None,
    default_agent_id: str | None = None,
    sequence: PlatformChatSequence | None = None,
    migrated: int = 0,
    unmapped: Sequence[str] = (),
    state_after: bool = False,
) -> tuple[ReconcileReport, SyncBatch]:
    """Rebuild missing or disagreeing records from the bot's markers; returns report and batch.

    `snapshot`, when given, must be the answer to the very sync this would ask (full
    state, `snapshot_window` for this store, taken just now); it is used instead.
    `default_agent_id` binds adopted rooms without a legacy record; `sequence` fills
    missing platform_chat_ids (one is made on the store when not given). `migrated` and
    `unmapped` (a legacy database migrated at this start) only go into the report.
    `state_after`: the server is known to answer MSC4222 `state_after` (see
    `snapshot_window`). With dry_run nothing is written or sent. Raises MatrixError when
    the sync fails.
    """
    window = snapshot_window(fresh=store.checkpoint() is None, state_after=state_after)
    batch = snapshot or await _snapshot(matrix, window)
    if window < STATE_WINDOW and batch.joined and not batch.state_after:
        log.warning("reconcile.state_after_missing", window=window)
        batch = await _snapshot(matrix, STATE_WINDOW)
    rooms = {room_id: room.state for room_id, room in batch.joined.items()}
    plan = plan_rebuild(
        rooms,
        local_state(store),
        bot_user_id=matrix.user_id,
        high_water=high_water_of(batch),
        default_agent_id=default_agent_id,
    )
    if not dry_run:
        apply_plan(store, plan)
        await apply_matrix_side(
            store, matrix, plan, sequence or PlatformChatSequence(store, matrix)
        )
    report = plan.report
    report.migrated, report.unmapped = migrated, list(unmapped)
    log.info("reconcile.done", dry_run=dry_run, **report.as_dict())
    return report, batch
