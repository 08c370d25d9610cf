"""Adopting the marker-less rooms the bot itself created (the upgrade from the old surface).

Part of the pure rebuild decision (tasks/rebuild.py calls `adopt`): a Space whose
`m.room.create` the bot sent with type `m.space`, and the bot-created rooms linked to
such a Space by `m.space.child` / `m.space.parent`. Their records come from the local
(migrated legacy) record when there is one, else from membership, the room name and
the creation order; the shell (tasks/reconcile.py) then writes their markers, so the
next start is ordinary. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from contracts.markers import SpaceMarker
from contracts.matrix import MatrixEvent
from contracts.state import RoomRecord, RoomType, chat_index, chat_label
from tasks.rebuild_plan import Adoption, Conflict, LocalState, ReconcileReport
from tasks.room_state import created_by, is_bot_space, members, room_name, state_event

_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


def _linked(
    a: Sequence[MatrixEvent], event_type: str, state_key: str
) -> bool:  # a link that is present and not removed (empty content)
    event = state_event(a, event_type, state_key)
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
