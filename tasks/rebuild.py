"""The pure rebuild decision: Matrix state and local records in, records to write out.

No I/O here: tasks/reconcile.py fetches the state and applies the plan. Rules:
- only markers sent by the bot count; others are skipped with a reason;
- a missing local record is restored; a disagreeing one is repaired (Matrix
  wins for everything a marker holds); a matching one is left alone;
- next_chat_index is above every recovered chat; the platform-chat sequence is
  above every id seen and above the account-data high-water mark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE, RoomMarker, SpaceMarker
from contracts.matrix import MatrixEvent
from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord, chat_index


@dataclass(frozen=True)
class Conflict:
    room_id: str
    reason: str


@dataclass
class ReconcileReport:
    rooms_scanned: int = 0
    users_restored: int = 0
    rooms_restored: int = 0
    chats_restored: int = 0
    repaired: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: list[Conflict] = field(default_factory=list)
    sequence_floor: int = 1

    @property
    def changes(self) -> int:
        return self.users_restored + self.rooms_restored + self.chats_restored + self.repaired

    def as_dict(self) -> dict[str, object]:
        return {
            "rooms_scanned": self.rooms_scanned,
            "users_restored": self.users_restored,
            "rooms_restored": self.rooms_restored,
            "chats_restored": self.chats_restored,
            "repaired": self.repaired,
            "conflicts": [{"room_id": c.room_id, "reason": c.reason} for c in self.conflicts],
            "skipped": [{"room_id": c.room_id, "reason": c.reason} for c in self.skipped],
            "sequence_floor": self.sequence_floor,
            "changes": self.changes,
        }


@dataclass(frozen=True)
class LocalState:
    users: Mapping[str, UserRecord]
    rooms: Mapping[str, RoomRecord]
    chats: Mapping[tuple[str, str], ChatRecord]
    sequence_next: int = 1


@dataclass
class RebuildPlan:
    users: list[UserRecord] = field(default_factory=list)
    rooms: list[RoomRecord] = field(default_factory=list)
    chats: list[ChatRecord] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # trigger event id -> room id
    sequence_floor: int = 1
    report: ReconcileReport = field(default_factory=ReconcileReport)


def current_state(state: Iterable[MatrixEvent]) -> list[MatrixEvent]:
    """Fold state events in order (state section, then timeline): the last one per key wins."""
    latest: dict[tuple[str, str], MatrixEvent] = {}
    for event in state:
        if event.state_key is not None:
            latest[(event.type, event.state_key)] = event
    return list(latest.values())


def marker_event(state: Iterable[MatrixEvent], event_type: str) -> MatrixEvent | None:
    """The room's current state event of `event_type` with state_key "" (any sender)."""
    found = None
    for event in state:
        if event.type == event_type and event.state_key == "":
            found = event
    return found


def room_name(state: Iterable[MatrixEvent]) -> str | None:
    event = marker_event(state, "m.room.name")
    name = event.content.get("name") if event else None
    return name if isinstance(name, str) and name else None


def room_from_state(
    room_id: str, state: Sequence[MatrixEvent], *, bot_user_id: str
) -> RoomRecord | None:
    """The chat room record described by a room's marker, or None if it has no trusted one."""
    event = marker_event(state, ROOM_MARKER_TYPE)
    if event is None or event.sender != bot_user_id:
        return None
    try:
        marker = RoomMarker.model_validate(event.content)
    except ValidationError:
        return None
    return _chat_room(room_id, marker)


def _chat_room(room_id: str, marker: RoomMarker) -> RoomRecord:
    return RoomRecord(
        room_id=room_id,
        room_type=RoomType.CHAT,
        matrix_user_id=marker.owner,
        space_id=marker.space_id,
        chat_id=marker.chat_id,
        display_name=marker.display_name,
        agent_id=marker.agent_id,
        platform_chat_id=marker.platform_chat_id,
        archived=marker.archived,
    )


def plan_rebuild(
    rooms: Mapping[str, Sequence[MatrixEvent]],
    local: LocalState,
    *,
    bot_user_id: str,
    high_water: int = 0,
) -> RebuildPlan:
    """Decide which records to write so the local cache matches Matrix. Pure."""
    plan = RebuildPlan()
    report = plan.report
    report.rooms_scanned = len(rooms)
    spaces: dict[str, tuple[str, SpaceMarker, set[str]]] = {}  # space id -> owner, marker, kids
    chats: dict[str, RoomRecord] = {}
    seen_ids: list[int] = []

    for room_id in sorted(rooms):
        state = current_state(rooms[room_id])
        space_event = marker_event(state, SPACE_MARKER_TYPE)
        room_event = marker_event(state, ROOM_MARKER_TYPE)
        event = space_event or room_event
        if event is None:
            report.skipped.append(Conflict(room_id, "no lambda.surface marker"))
            continue
        if event.sender != bot_user_id:
            report.skipped.append(Conflict(room_id, f"marker sent by {event.sender}, not the bot"))
            continue
        try:
            if space_event is not None:
                space_marker = SpaceMarker.model_validate(space_event.content)
                children = {
                    e.state_key
                    for e in state
                    if e.type == "m.space.child" and e.state_key and e.content.get("via")
                }
                spaces[room_id] = (space_marker.owner, space_marker, children)
            else:
                room_marker = RoomMarker.model_validate(event.content)
                chats[room_id] = _chat_room(room_id, room_marker)
                # Issued by the bot even if the room loses a conflict below: never reuse it.
                if room_marker.platform_chat_id and room_marker.platform_chat_id.isdigit():
                    seen_ids.append(int(room_marker.platform_chat_id))
                origin = event.content.get("origin_event_id")
                if isinstance(origin, str):
                    plan.origins[origin] = room_id
        except ValidationError as exc:
            report.skipped.append(Conflict(room_id, f"invalid marker: {exc.errors()[0]['msg']}"))

    # One Space per owner: the local one wins a tie, otherwise the smallest id.
    space_of: dict[str, str] = {}
    for space_id, (owner, _marker, _kids) in sorted(spaces.items()):
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
        if space is not None and room_id not in space[2]:
            report.conflicts.append(Conflict(room_id, "not linked from its Space (m.space.child)"))
        taken[key] = room_id
        accepted[room_id] = room

    # Rooms: restore or repair.
    for space_id, (owner, _marker, _kids) in sorted(spaces.items()):
        if space_of.get(owner) != space_id:
            continue
        record = RoomRecord(
            room_id=space_id,
            room_type=RoomType.SPACE,
            matrix_user_id=owner,
            display_name=room_name(rooms[space_id]),
        )
        _compare(plan, local.rooms.get(space_id), record, report)
    for room_id, room in sorted(accepted.items()):
        _compare(plan, local.rooms.get(room_id), room, report)
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

    # Users: one per owner of a Space or of a chat.
    owners = set(space_of) | {room.matrix_user_id for room in accepted.values()}
    for owner in sorted(owners):
        indexes = [
            chat_index(r.chat_id or "") or 0 for r in accepted.values() if r.matrix_user_id == owner
        ]
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

    plan.sequence_floor = max([*seen_ids, high_water, local.sequence_next - 1]) + 1
    report.sequence_floor = plan.sequence_floor
    return plan


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
