"""The pure rebuild decision: Matrix state and local records in, records to write out.

No I/O here: tasks/reconcile.py fetches the state and applies the plan. Rules:
- only markers sent by the bot count; others are skipped with a reason;
- rooms without a marker are *adopted* when the bot itself created them (the upgrade
  from the marker-less surface, see `adopt`): a Space whose `m.room.create` the bot
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

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE, RoomMarker, SpaceMarker
from contracts.matrix import JsonDict, MatrixEvent
from contracts.state import (
    ChatRecord,
    RoomRecord,
    RoomType,
    UserRecord,
    chat_index,
    chat_label,
)


@dataclass(frozen=True)
class Conflict:
    room_id: str
    reason: str


@dataclass(frozen=True)
class Adoption:
    """A marker-less room the bot created, taken over (see `adopt`)."""

    room_id: str
    room_type: RoomType
    owner: str
    chat_id: str | None = None
    source: str = "matrix"  # "legacy" when a local (migrated) record supplied the binding

    def as_dict(self) -> dict[str, object]:
        return {
            "room_id": self.room_id,
            "room_type": self.room_type.value,
            "owner": self.owner,
            "chat_id": self.chat_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class LinkRepair:
    """A Space link state event to (re)write; the shell adds `via` (the bot's server)."""

    room_id: str  # the room the state event goes into
    event_type: str  # m.space.child (in the Space) or m.space.parent (in the chat room)
    state_key: str
    content: JsonDict  # the existing content to keep (order, canonical, ...), without via


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
    adopted: list[Adoption] = field(default_factory=list)
    ids_filled: list[str] = field(default_factory=list)  # room ids given a platform_chat_id
    links_repaired: list[LinkRepair] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # rooms the bot has left
    # Set by the runtime when it migrated a legacy key-value database at this start.
    migrated: int = 0
    unmapped: list[str] = field(default_factory=list)

    @property
    def local_changes(self) -> int:
        """Records written or deleted in the local store."""
        return (
            self.users_restored
            + self.rooms_restored
            + self.chats_restored
            + self.repaired
            + len(self.dropped)
        )

    @property
    def changes(self) -> int:
        """Everything this run changes, locally and in Matrix (0 on a second run)."""
        return (
            self.local_changes + len(self.adopted) + len(self.ids_filled) + len(self.links_repaired)
        )

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
            "adopted": len(self.adopted),
            "adoptions": [a.as_dict() for a in self.adopted],
            "ids_filled": len(self.ids_filled),
            "links_repaired": len(self.links_repaired),
            "links": [
                {"room_id": link.room_id, "type": link.event_type, "state_key": link.state_key}
                for link in self.links_repaired
            ],
            "dropped": list(self.dropped),
            "migrated": self.migrated,
            "unmapped": list(self.unmapped),
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
    # Matrix-side work for the shell, after the records above are written:
    space_markers: list[SpaceMarkerWrite] = field(default_factory=list)
    room_markers: list[str] = field(default_factory=list)  # adopted chat rooms to mark
    fill_ids: list[str] = field(default_factory=list)  # chat rooms needing a platform_chat_id
    links: list[LinkRepair] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)  # local rooms the bot is not joined to


@dataclass(frozen=True)
class SpaceMarkerWrite:
    space_id: str
    marker: SpaceMarker


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
                chats[room_id] = _chat_room(room_id, room_marker)
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

    # Local rooms the bot is no longer in (it left, was kicked, or the room is gone).
    plan.drop = sorted(room_id for room_id in local.rooms if room_id not in rooms)
    report.dropped = list(plan.drop)

    plan.sequence_floor = max([*seen_ids, high_water, local.sequence_next - 1]) + 1
    report.sequence_floor = plan.sequence_floor
    return plan


def has_via(event: MatrixEvent | None) -> bool:
    via = event.content.get("via") if event is not None else None
    return isinstance(via, list) and any(isinstance(server, str) and server for server in via)


def _state(state: Iterable[MatrixEvent], event_type: str, state_key: str) -> MatrixEvent | None:
    found = None
    for event in state:
        if event.type == event_type and event.state_key == state_key:
            found = event
    return found


def missing_links(
    space_state: Sequence[MatrixEvent], room_state: Sequence[MatrixEvent], room: RoomRecord
) -> list[LinkRepair]:
    """The Space link events of a chat room that are missing or lack `via`."""
    assert room.space_id is not None
    repairs = []
    child = _state(space_state, "m.space.child", room.room_id)
    if not has_via(child):
        content = {k: v for k, v in (child.content if child else {}).items() if k != "via"}
        if room.chat_id and "order" not in content:
            content["order"] = room.chat_id.zfill(8)
        repairs.append(LinkRepair(room.space_id, "m.space.child", room.room_id, content))
    parent = _state(room_state, "m.space.parent", room.space_id)
    if not has_via(parent):
        content = {k: v for k, v in (parent.content if parent else {}).items() if k != "via"}
        content.setdefault("canonical", True)
        repairs.append(LinkRepair(room.room_id, "m.space.parent", room.space_id, content))
    return repairs


# -- adoption of marker-less rooms the bot created -------------------------------------------

_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


def created_by(state: Iterable[MatrixEvent]) -> MatrixEvent | None:
    return marker_event(state, "m.room.create")


def is_bot_space(state: Sequence[MatrixEvent], bot_user_id: str) -> bool:
    create = created_by(state)
    return (
        create is not None
        and create.sender == bot_user_id
        and create.content.get("type") == "m.space"
    )


def members(state: Iterable[MatrixEvent], bot_user_id: str) -> list[str]:
    """Joined or invited members other than the bot."""
    return sorted(
        e.state_key
        for e in state
        if e.type == "m.room.member"
        and e.state_key
        and e.state_key != bot_user_id
        and e.content.get("membership") in ("join", "invite")
    )


def _linked(
    a: Sequence[MatrixEvent], event_type: str, state_key: str
) -> bool:  # a link that is present and not removed (empty content)
    event = _state(a, event_type, state_key)
    return event is not None and bool(event.content)


def adopt(
    unmarked: Mapping[str, Sequence[MatrixEvent]],
    states: Mapping[str, Sequence[MatrixEvent]],
    spaces: dict[str, tuple[str, SpaceMarker]],
    chats: dict[str, RoomRecord],
    local: LocalState,
    *,
    bot_user_id: str,
    default_agent_id: str | None,
    report: ReconcileReport,
) -> dict[str, Adoption]:
    """Take over the marker-less Spaces and chat rooms the bot created (adds to spaces/chats).

    A Space: `m.room.create` sent by the bot with type `m.space`; its owner is the
    legacy record's, else its single non-bot member. A chat room: created by the bot,
    not a Space, linked to a known Space by `m.space.child` or `m.space.parent`; its
    chat id, name, agent and platform_chat_id come from the legacy record, else the
    room name (a trailing number) or creation order, the default agent, and none (to
    be filled from the sequence). Rooms the bot did not create are skipped.
    """
    adopted: dict[str, Adoption] = {}
    legacy_space_owner = {
        u.space_id: u.matrix_user_id for u in local.users.values() if u.space_id is not None
    }
    for room_id, state in sorted(unmarked.items()):
        if not is_bot_space(state, bot_user_id):
            continue
        present = members(state, bot_user_id)
        legacy = local.rooms.get(room_id)
        owner = (legacy.matrix_user_id if legacy else None) or legacy_space_owner.get(room_id)
        if owner is None and len(present) == 1:
            owner = present[0]
        if owner is None:
            report.skipped.append(
                Conflict(room_id, f"bot-created Space with {len(present)} members: no one owner")
            )
            continue
        user = local.users.get(owner)
        selected = (user.selected_agent_id if user else None) or default_agent_id
        spaces[room_id] = (owner, SpaceMarker(owner=owner, selected_agent_id=selected))
        adopted[room_id] = Adoption(
            room_id, RoomType.SPACE, owner, source="legacy" if legacy or user else "matrix"
        )

    drafts: list[tuple[tuple[int, str], str, str, RoomRecord | None]] = []
    for room_id, state in sorted(unmarked.items()):
        if room_id in adopted:
            continue
        create = created_by(state)
        if create is None or create.sender != bot_user_id:
            report.skipped.append(Conflict(room_id, "no lambda.surface marker, not bot-created"))
            continue
        legacy = local.rooms.get(room_id)
        linked = sorted(
            space_id
            for space_id in spaces
            if _linked(states[space_id], "m.space.child", room_id)
            or _linked(state, "m.space.parent", space_id)
        )
        if legacy is not None and legacy.space_id in linked:
            linked = [legacy.space_id]
        if create.content.get("type") == "m.space" or not linked:
            report.skipped.append(Conflict(room_id, "no lambda.surface marker, not in a Space"))
            continue
        space_id = linked[0]
        if legacy is not None and (
            legacy.room_type is not RoomType.CHAT or legacy.matrix_user_id != spaces[space_id][0]
        ):
            legacy = None
        drafts.append(((create.origin_server_ts, room_id), room_id, space_id, legacy))

    # Chat ids: the legacy one, else the room name's number, else the next free one in
    # creation order; never one a marked room or an earlier adoptee of the owner holds.
    taken = {(r.matrix_user_id, r.chat_id) for r in chats.values()}
    chat_ids: dict[str, str] = {}
    for pass_no in (0, 1, 2):
        for _order, room_id, space_id, legacy in sorted(drafts):
            if room_id in chat_ids:
                continue
            owner = spaces[space_id][0]
            wanted: str | None = None
            if pass_no == 0 and legacy is not None and legacy.chat_id:
                wanted = legacy.chat_id if chat_index(legacy.chat_id) else None
            elif pass_no == 1:
                match = _TRAILING_NUMBER.search(room_name(states[room_id]) or "")
                wanted = chat_label(int(match.group(1))) if match else None
                wanted = wanted if wanted and chat_index(wanted) else None
            elif pass_no == 2:
                used = [chat_index(c or "") or 0 for o, c in taken if o == owner]
                user = local.users.get(owner)
                floor = user.next_chat_index - 1 if user else 0
                wanted = chat_label(max([*used, floor]) + 1)
            if wanted is not None and (owner, wanted) not in taken:
                taken.add((owner, wanted))
                chat_ids[room_id] = wanted

    for _order, room_id, space_id, legacy in sorted(drafts):
        owner = spaces[space_id][0]
        chat_id = chat_ids[room_id]
        chats[room_id] = RoomRecord(
            room_id=room_id,
            room_type=RoomType.CHAT,
            matrix_user_id=owner,
            space_id=space_id,
            chat_id=chat_id,
            display_name=(legacy.display_name if legacy else None)
            or room_name(states[room_id])
            or chat_id,
            agent_id=(legacy.agent_id if legacy else None) or default_agent_id,
            platform_chat_id=legacy.platform_chat_id if legacy else None,
            archived=legacy.archived if legacy else False,
        )
        adopted[room_id] = Adoption(
            room_id, RoomType.CHAT, owner, chat_id, "legacy" if legacy else "matrix"
        )
    return adopted


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
