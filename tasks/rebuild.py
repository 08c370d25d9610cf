"""The pure rebuild decision: Matrix state and local records in, records to write out.

No I/O here: tasks/reconcile.py fetches the state and applies the plan. The values
it takes and gives are in tasks/rebuild_plan.py, the readers of a room's state in
tasks/room_state.py. Rules:
- only markers sent by the bot count; others are skipped with a reason;
- rooms without a marker are *adopted* when the bot itself created them (the upgrade
  from the marker-less surface, tasks/adoption.py): a Space whose `m.room.create` the bot
  sent with type `m.space`, and the bot-created rooms linked to a Space by
  `m.space.child` / `m.space.parent`. Their records come from the local (migrated
  legacy) record when there is one, else from membership, the room name and the
  creation order; the shell then writes their markers, so the next start is ordinary;
- a chat room without a platform_chat_id is listed for the shell to fill from the
  sequence; missing or `via`-less Space links are listed for the shell to rewrite;
- local records of rooms the bot is no longer joined to are dropped;
- a missing local record is restored; a disagreeing one is repaired (Matrix
  wins for everything a marker holds); a matching one is left alone;
- next_chat_index is above every recovered chat; the platform-chat sequence is
  above every id seen and above the account-data high-water mark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE, RoomMarker, SpaceMarker
from contracts.matrix import MatrixEvent
from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord, chat_index
from tasks.adoption import adopt
from tasks.rebuild_plan import (
    Conflict,
    LinkRepair,
    LocalState,
    RebuildPlan,
    ReconcileReport,
    SpaceMarkerWrite,
)
from tasks.room_state import (
    chat_room_from_marker,
    current_state,
    has_via,
    marker_event,
    room_name,
    state_event,
)


def plan_rebuild(
    rooms: Mapping[str, Sequence[MatrixEvent]],
    local: LocalState,
    *,
    bot_user_id: str,
    high_water: int = 0,
    default_agent_id: str | None = None,
) -> RebuildPlan:
    """Decide which records to write so the local cache matches Matrix. Pure.

    `rooms` must be every room the bot is joined to (local records of other rooms are
    dropped). `default_agent_id` binds adopted rooms that have no legacy record.
    """
    plan = RebuildPlan()
    report = plan.report
    report.rooms_scanned = len(rooms)
    spaces: dict[str, tuple[str, SpaceMarker]] = {}  # space id -> owner, marker
    chats: dict[str, RoomRecord] = {}
    seen_ids: list[int] = []
    unmarked: dict[str, list[MatrixEvent]] = {}
    states = {room_id: current_state(rooms[room_id]) for room_id in rooms}

    for room_id in sorted(rooms):
        state = states[room_id]
        space_event = marker_event(state, SPACE_MARKER_TYPE)
        room_event = marker_event(state, ROOM_MARKER_TYPE)
        event = space_event or room_event
        if event is None:
            unmarked[room_id] = state
            continue
        if event.sender != bot_user_id:
            report.skipped.append(Conflict(room_id, f"marker sent by {event.sender}, not the bot"))
            continue
        try:
            if space_event is not None:
                space_marker = SpaceMarker.model_validate(space_event.content)
                spaces[room_id] = (space_marker.owner, space_marker)
            else:
                room_marker = RoomMarker.model_validate(event.content)
                chats[room_id] = chat_room_from_marker(room_id, room_marker)
                # Issued by the bot even if the room loses a conflict below: never reuse it.
                if room_marker.platform_chat_id and room_marker.platform_chat_id.isdigit():
                    seen_ids.append(int(room_marker.platform_chat_id))
                origin = event.content.get("origin_event_id")
                if isinstance(origin, str):
                    plan.origins[origin] = room_id
        except ValidationError as exc:
            report.skipped.append(Conflict(room_id, f"invalid marker: {exc.errors()[0]['msg']}"))

    adopted = adopt(
        unmarked,
        states,
        spaces,
        chats,
        local,
        bot_user_id=bot_user_id,
        default_agent_id=default_agent_id,
        report=report,
    )
    seen_ids += [
        int(room.platform_chat_id)
        for room_id, room in chats.items()
        if room_id in adopted and room.platform_chat_id and room.platform_chat_id.isdigit()
    ]

    # One Space per owner: the local one wins a tie, otherwise the smallest id.
    space_of: dict[str, str] = {}
    for space_id, (owner, _marker) in sorted(spaces.items()):
        current = space_of.get(owner)
        if current is None:
            space_of[owner] = space_id
            continue
        local_user = local.users.get(owner)
        keep = space_id if local_user and local_user.space_id == space_id else current
        other = current if keep == space_id else space_id
        space_of[owner] = keep
        report.conflicts.append(Conflict(other, f"second Space for {owner}; kept {keep}"))

    # Chat rooms: the owner must match the Space's owner; chat ids unique per owner.
    taken: dict[tuple[str, str], str] = {}
    accepted: dict[str, RoomRecord] = {}
    for room_id, room in sorted(chats.items(), key=lambda kv: (kv[1].chat_id or "", kv[0])):
        assert room.chat_id is not None
        space = spaces.get(room.space_id or "")
        if space is not None and space[0] != room.matrix_user_id:
            report.conflicts.append(
                Conflict(room_id, f"owner {room.matrix_user_id} differs from its Space's owner")
            )
            continue
        if chat_index(room.chat_id) is None:
            report.conflicts.append(Conflict(room_id, f"bad chat id {room.chat_id!r}"))
            continue
        key = (room.matrix_user_id, room.chat_id)
        if key in taken:
            local_room = local.rooms.get(room_id)
            if local_room is None or local_room.chat_id != room.chat_id:
                report.conflicts.append(
                    Conflict(room_id, f"chat id {room.chat_id} already used by {taken[key]}")
                )
                continue
            accepted.pop(taken[key], None)
            report.conflicts.append(
                Conflict(taken[key], f"chat id {room.chat_id} already used by {room_id}")
            )
        taken[key] = room_id
        accepted[room_id] = room

    # Rooms: restore or repair.
    for space_id, (owner, marker) in sorted(spaces.items()):
        if space_of.get(owner) != space_id:
            continue
        record = RoomRecord(
            room_id=space_id,
            room_type=RoomType.SPACE,
            matrix_user_id=owner,
            display_name=room_name(states[space_id]),
        )
        _compare(plan, local.rooms.get(space_id), record, report)
        if space_id in adopted:
            plan.space_markers.append(SpaceMarkerWrite(space_id, marker))
            report.adopted.append(adopted[space_id])
    for room_id, room in sorted(accepted.items()):
        local_room = local.rooms.get(room_id)
        if (
            room.platform_chat_id is None
            and local_room is not None
            and local_room.platform_chat_id is not None
            and local_room.matrix_user_id == room.matrix_user_id
        ):
            # Filled locally by a run that stopped before it rewrote the marker: keep it.
            room = room.model_copy(update={"platform_chat_id": local_room.platform_chat_id})
            if room_id not in adopted:
                plan.room_markers.append(room_id)
                report.ids_filled.append(room_id)
        _compare(plan, local_room, room, report)
        chat = ChatRecord(
            matrix_user_id=room.matrix_user_id,
            chat_id=room.chat_id or "",
            room_id=room_id,
            display_name=room.display_name or room.chat_id or "",
            archived=room.archived,
        )
        local_chat = local.chats.get((room.matrix_user_id, chat.chat_id))
        if local_chat is None:
            plan.chats.append(chat)
            report.chats_restored += 1
        elif local_chat != chat:
            plan.chats.append(chat)
            report.repaired += 1
        if room_id in adopted:
            plan.room_markers.append(room_id)
            report.adopted.append(adopted[room_id])
        if room.platform_chat_id is None:
            plan.fill_ids.append(room_id)
            report.ids_filled.append(room_id)
        if room.space_id is not None and space_of.get(room.matrix_user_id) == room.space_id:
            plan.links += missing_links(states[room.space_id], states[room_id], room)
    report.links_repaired = list(plan.links)

    # Users: one per owner of a Space or of a chat.
    owners = set(space_of) | {room.matrix_user_id for room in accepted.values()}
    indexes_of: dict[str, list[int]] = {}
    for r in accepted.values():
        indexes_of.setdefault(r.matrix_user_id, []).append(chat_index(r.chat_id or "") or 0)
    for owner in sorted(owners):
        indexes = indexes_of.get(owner, [])
        local_user = local.users.get(owner)
        user_space = space_of.get(owner) or (local_user.space_id if local_user else None)
        space_entry = spaces.get(user_space or "")
        selected = (
            space_entry[1].selected_agent_id
            if space_entry is not None and space_entry[1].selected_agent_id
            else (local_user.selected_agent_id if local_user else None)
        )
        next_index = max([*indexes, 0]) + 1
        if local_user is not None:
            next_index = max(next_index, local_user.next_chat_index)
        user = UserRecord(
            matrix_user_id=owner,
            space_id=user_space,
            next_chat_index=next_index,
            selected_agent_id=selected,
        )
        if local_user is None:
            plan.users.append(user)
            report.users_restored += 1
        elif local_user != user:
            plan.users.append(user)
            report.repaired += 1

    # Local rooms the bot is no longer in (it left, was kicked, or the room is gone).
    plan.drop = sorted(room_id for room_id in local.rooms if room_id not in rooms)
    report.dropped = list(plan.drop)

    plan.sequence_floor = max([*seen_ids, high_water, local.sequence_next - 1]) + 1
    report.sequence_floor = plan.sequence_floor
    return plan


def missing_links(
    space_state: Sequence[MatrixEvent], room_state: Sequence[MatrixEvent], room: RoomRecord
) -> list[LinkRepair]:
    """The Space link events of a chat room that are missing or lack `via`."""
    assert room.space_id is not None
    repairs = []
    child = state_event(space_state, "m.space.child", room.room_id)
    if not has_via(child):
        content = {k: v for k, v in (child.content if child else {}).items() if k != "via"}
        if room.chat_id and "order" not in content:
            content["order"] = room.chat_id.zfill(8)
        repairs.append(LinkRepair(room.space_id, "m.space.child", room.room_id, content))
    parent = state_event(room_state, "m.space.parent", room.space_id)
    if not has_via(parent):
        content = {k: v for k, v in (parent.content if parent else {}).items() if k != "via"}
        content.setdefault("canonical", True)
        repairs.append(LinkRepair(room.room_id, "m.space.parent", room.space_id, content))
    return repairs


def _compare(
    plan: RebuildPlan,
    local: RoomRecord | None,
    wanted: RoomRecord,
    report: ReconcileReport,
) -> None:
    if local is None:
        plan.rooms.append(wanted)
        report.rooms_restored += 1
    elif local != wanted:
        plan.rooms.append(wanted)
        report.repaired += 1
        fields = sorted(
            name
            for name in type(wanted).model_fields
            if getattr(local, name) != getattr(wanted, name)
        )
        report.conflicts.append(
            Conflict(wanted.room_id, "local record disagreed with Matrix on " + ", ".join(fields))
        )
