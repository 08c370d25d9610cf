"""Creating a user's Space and chat rooms, with their markers and links.

Markers go into `initial_state`, so a room never exists without its marker:
whatever happens after creation, reconciliation can find it.

A room created for a trigger (an invite, a `!new`) names it in its marker
(`origin_event_id`). `createRoom` is not idempotent: when its answer is lost
(a timeout, a 5xx after the server created the room) the room may exist all
the same. `find_created_room` finds it among the bot's joined rooms, so a retry
uses it instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE, RoomMarker, SpaceMarker
from contracts.matrix import JsonDict, MatrixEvent, MatrixPort, MatrixRequestError, StateEventSpec
from contracts.state import RoomRecord, RoomType, UserRecord

log = structlog.get_logger(__name__)

ORIGIN_FIELD = "origin_event_id"

BOT_ONLY_EVENTS = (
    SPACE_MARKER_TYPE,
    ROOM_MARKER_TYPE,
    "m.space.child",
    "m.space.parent",
    "m.room.power_levels",
    "m.room.name",
    "m.room.encryption",
    "m.room.tombstone",
    "m.room.server_acl",
)


def power_levels() -> JsonDict:
    """Only the bot may change topology and markers; the user may talk and react.

    No "users" key: Synapse gives the creator (the bot) full power, and room
    version 12 refuses the creator in that list.
    """
    return {
        "users_default": 0,
        "events_default": 0,
        "state_default": 100,
        "invite": 100,
        "kick": 100,
        "ban": 100,
        "redact": 50,
        "events": {event_type: 100 for event_type in BOT_ONLY_EVENTS},
    }


def encryption_state() -> StateEventSpec:
    """End-to-end encryption from the room's first event (Megolm, the spec's defaults).

    Only messages are encrypted; state events (markers, names, Space links) stay in the
    clear, so reconciliation reads them as before.
    """
    return StateEventSpec(type="m.room.encryption", content={"algorithm": "m.megolm.v1.aes-sha2"})


def space_marker_state(marker: SpaceMarker) -> StateEventSpec:
    return StateEventSpec(type=SPACE_MARKER_TYPE, content=marker.model_dump(mode="json"))


def room_marker_state(marker: RoomMarker) -> StateEventSpec:
    return StateEventSpec(type=ROOM_MARKER_TYPE, content=marker.model_dump(mode="json"))


def marker_for(room: RoomRecord) -> RoomMarker:
    if room.space_id is None or room.chat_id is None:
        raise ValueError(f"room {room.room_id} is not a linked chat room")
    return RoomMarker(
        owner=room.matrix_user_id,
        space_id=room.space_id,
        chat_id=room.chat_id,
        display_name=room.display_name or room.chat_id,
        agent_id=room.agent_id,
        platform_chat_id=room.platform_chat_id,
        archived=room.archived,
    )


async def create_space(
    matrix: MatrixPort, user: UserRecord, name: str, *, origin_event_id: str | None = None
) -> str:
    """Create the user's private Space with its marker; returns the Space id."""
    marker = SpaceMarker(owner=user.matrix_user_id, selected_agent_id=user.selected_agent_id)
    content = marker.model_dump(mode="json")
    if origin_event_id:
        content[ORIGIN_FIELD] = origin_event_id
    return await matrix.create_room(
        name=name,
        invite=[user.matrix_user_id],
        is_space=True,
        initial_state=[StateEventSpec(type=SPACE_MARKER_TYPE, content=content)],
        power_level_overrides=power_levels(),
    )


async def create_chat_room(
    matrix: MatrixPort,
    room: RoomRecord,
    *,
    origin_event_id: str | None = None,
    encrypted: bool = True,
    topic: str | None = None,
) -> str:
    """Create a chat room pointing to the user's Space (m.space.parent); returns the room id.

    `encrypted` puts `m.room.encryption` into the initial state. The Space itself is
    never encrypted: nobody writes messages there.

    The Space's side of the link (`link_child`) is the caller's to add once it has
    recorded the room, so a retry after a failed link finds the room instead of
    creating a second one.
    """
    assert room.space_id is not None
    marker = marker_for(room).model_dump(mode="json")
    if origin_event_id:
        marker[ORIGIN_FIELD] = origin_event_id
    via = [matrix.server_name]
    room_id = await matrix.create_room(
        name=room.display_name or room.chat_id or "Chat",
        invite=[room.matrix_user_id],
        initial_state=[
            StateEventSpec(type=ROOM_MARKER_TYPE, content=marker),
            StateEventSpec(
                type="m.space.parent",
                state_key=room.space_id,
                content={"via": via, "canonical": True},
            ),
            *([encryption_state()] if encrypted else []),
        ],
        power_level_overrides=power_levels(),
        topic=topic,
    )
    return room_id


async def find_created_room(
    matrix: MatrixPort,
    *,
    marker_type: str,
    origin_event_id: str,
    known: Callable[[str], bool],
) -> tuple[str, list[MatrixEvent]] | None:
    """The room the bot created for `origin_event_id` (and its state), if it exists.

    For a retry after a creation whose answer was lost. Looks at the bot's joined
    rooms that `known` does not claim (the store's rooms are never this one),
    for a `marker_type` marker the bot sent that names the trigger.
    """
    joined = await matrix.joined_rooms()
    candidates = [room_id for room_id in joined if not known(room_id)]
    for room_id in candidates:
        try:
            state = await matrix.room_state(room_id)
        except MatrixRequestError:  # left or forgotten since: not it
            continue
        for event in state:
            if (
                event.type == marker_type
                and event.state_key == ""
                and event.sender == matrix.user_id
                and event.content.get(ORIGIN_FIELD) == origin_event_id
            ):
                log.warning(
                    "room.creation_recovered",
                    room_id=room_id,
                    marker_type=marker_type,
                    trigger=origin_event_id,
                    looked_at=len(candidates),
                )
                return room_id, state
    log.info("room.creation_not_found", trigger=origin_event_id, looked_at=len(candidates))
    return None


async def link_child(matrix: MatrixPort, space_id: str, room_id: str, *, order: str | None) -> None:
    content: JsonDict = {"via": [matrix.server_name]}
    if order:
        content["order"] = order.zfill(8)
    await matrix.send_state(space_id, "m.space.child", content, state_key=room_id)


async def write_room_marker(matrix: MatrixPort, room: RoomRecord) -> None:
    """Publish the room's current binding (agent, platform chat, name, archived) to Matrix."""
    await matrix.send_state(
        room.room_id, ROOM_MARKER_TYPE, marker_for(room).model_dump(mode="json")
    )


async def write_space_marker(matrix: MatrixPort, user: UserRecord) -> None:
    if user.space_id is None:
        return
    marker = SpaceMarker(owner=user.matrix_user_id, selected_agent_id=user.selected_agent_id)
    await matrix.send_state(user.space_id, SPACE_MARKER_TYPE, marker.model_dump(mode="json"))


def new_chat_record(
    user: UserRecord,
    *,
    room_id: str,
    display_name: str,
    agent_id: str | None,
    platform_chat_id: str,
) -> RoomRecord:
    return RoomRecord(
        room_id=room_id,
        room_type=RoomType.CHAT,
        matrix_user_id=user.matrix_user_id,
        space_id=user.space_id,
        chat_id=f"C{user.next_chat_index}",
        display_name=display_name,
        agent_id=agent_id,
        platform_chat_id=platform_chat_id,
    )
