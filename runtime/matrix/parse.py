"""The pure half of the Matrix adapter: homeserver answers to contracts values.

No I/O and no nio: the raw JSON of ``/sync``, room state and ``/messages`` becomes
:class:`contracts.matrix.MatrixEvent` / :class:`contracts.matrix.SyncBatch`, and a failed
answer (HTTP status, ``errcode``, ``retry_after_ms``) becomes one of the
:mod:`contracts.matrix` exceptions (the table is in :mod:`runtime.matrix.nio_adapter`).
Raw JSON keeps every event, including custom ``lambda.surface.*`` state and unknown
message types, exactly as the server sent it.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.matrix import (
    InvitedRoom,
    JoinedRoom,
    MatrixAuthError,
    MatrixError,
    MatrixEvent,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixUnreachable,
    SyncBatch,
)

__all__ = [
    "DEFAULT_RATE_LIMIT_WAIT_S",
    "STATE_AFTER_KEYS",
    "as_dict",
    "error_for",
    "error_from_body",
    "event_from_json",
    "events_from_section",
    "json_or_none",
    "split_mxc",
    "state_after_section",
    "sync_batch_from_json",
]

DEFAULT_RATE_LIMIT_WAIT_S: Final = 5.0
# MSC4222's section of a joined room in /sync, stable name first.
STATE_AFTER_KEYS: Final = ("state_after", "org.matrix.msc4222.state_after")

_AUTH_ERRCODES: Final = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"})
_LOGIN_REFUSED_ERRCODES: Final = frozenset({"M_FORBIDDEN", "M_USER_DEACTIVATED"})


# --- errors ---------------------------------------------------------------------------


def error_for(
    status: int | None,
    errcode: str | None,
    message: str,
    *,
    retry_after_ms: int | None = None,
    login: bool = False,
) -> MatrixError:
    """The contracts exception for a failed homeserver answer (see runtime.matrix.nio_adapter)."""
    text = f"{errcode or 'HTTP ' + str(status)}: {message}" if message else str(errcode or status)
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        wait = retry_after_ms / 1000 if retry_after_ms else DEFAULT_RATE_LIMIT_WAIT_S
        return MatrixRateLimited(text, retry_after=wait, errcode=errcode)
    if status is not None and status >= 500:
        return MatrixUnreachable(text, errcode=errcode, status=status)
    if status == 401 or errcode in _AUTH_ERRCODES:
        return MatrixAuthError(text, errcode=errcode, status=status)
    if login and (status == 403 or errcode in _LOGIN_REFUSED_ERRCODES):
        return MatrixAuthError(text, errcode=errcode, status=status)
    return MatrixRequestError(text, errcode=errcode, status=status)


def error_from_body(status: int, body: Any) -> MatrixError:
    """`error_for` from a non-2xx answer's parsed JSON body (anything, even None)."""
    body = as_dict(body)
    errcode = body.get("errcode")
    message = body.get("error")
    retry_after_ms = body.get("retry_after_ms")
    return error_for(
        status,
        errcode if isinstance(errcode, str) else None,
        message if isinstance(message, str) else "",
        retry_after_ms=retry_after_ms if isinstance(retry_after_ms, int) else None,
    )


# --- JSON -----------------------------------------------------------------------------


def json_or_none(raw: bytes) -> Any:
    """The parsed JSON of a body; None when it is not JSON (an empty body included)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def split_mxc(mxc_uri: str) -> tuple[str, str]:
    """(server name, media id) of an ``mxc://`` URI; MatrixRequestError if it is not one."""
    parts = urlsplit(mxc_uri)
    media_id = parts.path.lstrip("/")
    if parts.scheme != "mxc" or not parts.netloc or not media_id or "/" in media_id:
        raise MatrixRequestError(f"not an mxc:// URI: {mxc_uri!r}", errcode="M_INVALID_PARAM")
    return parts.netloc, media_id


# --- events and /sync -----------------------------------------------------------------


def event_from_json(raw: Any, room_id: str) -> MatrixEvent | None:
    """A MatrixEvent from raw event JSON; None for something that is not an event."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return None
    content = raw.get("content")
    unsigned = raw.get("unsigned")
    state_key = raw.get("state_key")
    ts = raw.get("origin_server_ts")
    return MatrixEvent(
        event_id=str(raw.get("event_id") or ""),
        room_id=str(raw.get("room_id") or room_id),
        sender=str(raw.get("sender") or ""),
        type=raw["type"],
        content=content if isinstance(content, dict) else {},
        origin_server_ts=ts if isinstance(ts, int) else 0,
        state_key=state_key if isinstance(state_key, str) else None,
        unsigned=unsigned if isinstance(unsigned, dict) else {},
    )


def events_from_section(section: Any, room_id: str) -> list[MatrixEvent]:
    """The events of a ``{"events": [...]}`` section, in order, skipping garbage."""
    raw_events = section.get("events") if isinstance(section, dict) else None
    if not isinstance(raw_events, list):
        return []
    parsed = (event_from_json(raw, room_id) for raw in raw_events)
    return [event for event in parsed if event is not None]


def state_after_section(room: dict[str, Any]) -> Any | None:
    """A joined room's MSC4222 ``state_after`` (stable or unstable name), None without."""
    for key in STATE_AFTER_KEYS:
        if key in room:
            return room[key]
    return None


def sync_batch_from_json(body: Any, own_user_id: str) -> SyncBatch:
    """Convert a raw ``/sync`` response body into a SyncBatch.

    A joined room's ``state`` holds the ``state`` section first, then the state events
    found in the timeline, in order: folding it into a dict keyed by (type, state_key)
    gives the current state. With MSC4222 (the query asked for it and the server
    honours it) the room has ``state_after`` instead of ``state``: the state as of the
    end of the timeline, so it comes after the timeline's state events, and the batch
    says so (``SyncBatch.state_after``). Raises MatrixUnreachable for a body without
    next_batch.
    """
    if not isinstance(body, dict) or not isinstance(body.get("next_batch"), str):
        raise MatrixUnreachable("sync answer without next_batch", status=200)
    rooms = as_dict(body.get("rooms"))

    joined: dict[str, JoinedRoom] = {}
    answered_after = False
    for room_id, room in as_dict(rooms.get("join")).items():
        room = as_dict(room)
        timeline_section = as_dict(room.get("timeline"))
        timeline = events_from_section(timeline_section, room_id)
        after = state_after_section(room)
        if after is not None:
            answered_after = True
            state = [event for event in timeline if event.is_state]
            state.extend(events_from_section(after, room_id))
        else:
            state = events_from_section(room.get("state"), room_id)
            state.extend(event for event in timeline if event.is_state)
        prev_batch = timeline_section.get("prev_batch")
        joined[room_id] = JoinedRoom(
            room_id=room_id,
            state=state,
            timeline=timeline,
            limited=bool(timeline_section.get("limited", False)),
            prev_batch=prev_batch if isinstance(prev_batch, str) else None,
        )

    invited: dict[str, InvitedRoom] = {}
    for room_id, room in as_dict(rooms.get("invite")).items():
        state = events_from_section(as_dict(room).get("invite_state"), room_id)
        own = next(
            (
                event
                for event in reversed(state)
                if event.type == "m.room.member"
                and event.state_key == own_user_id
                and event.content.get("membership") == "invite"
            ),
            None,
        )
        invited[room_id] = InvitedRoom(
            room_id=room_id,
            inviter=own.sender or None if own else None,
            is_direct=bool(own and own.content.get("is_direct") is True),
            state=state,
        )

    account_data = {
        event.type: event.content
        for event in events_from_section(body.get("account_data"), room_id="")
    }
    return SyncBatch(
        next_batch=body["next_batch"],
        joined=joined,
        invited=invited,
        left=list(as_dict(rooms.get("leave"))),
        account_data=account_data,
        state_after=answered_after,
    )
