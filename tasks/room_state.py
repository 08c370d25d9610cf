"""Reading a room's Matrix state: the current state events, markers, name, creator, members.

Pure functions over the state events of one room (a sync's `state` and `timeline`
sections, or /state): the rebuild decision, adoption and the bot's room repair read
rooms through these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from contracts.markers import ROOM_MARKER_TYPE, RoomMarker
from contracts.matrix import MatrixEvent
from contracts.state import RoomRecord, RoomType


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
    return chat_room_from_marker(room_id, marker)


def chat_room_from_marker(room_id: str, marker: RoomMarker) -> RoomRecord:
    """The chat room record a (validated) room marker describes."""
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


def state_event(
    state: Iterable[MatrixEvent], event_type: str, state_key: str
) -> MatrixEvent | None:
    """The room's current state event of `event_type` with `state_key` (any sender)."""
    found = None
    for event in state:
        if event.type == event_type and event.state_key == state_key:
            found = event
    return found


def has_via(event: MatrixEvent | None) -> bool:
    via = event.content.get("via") if event is not None else None
    return isinstance(via, list) and any(isinstance(server, str) and server for server in via)


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
