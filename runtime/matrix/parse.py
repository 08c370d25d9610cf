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
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
    "LoadedSync",
    "as_dict",
    "error_for",
    "error_from_body",
    "event_from_json",
    "events_from_section",
    "json_or_none",
    "load_sync",
    "split_mxc",
    "state_after_section",
    "sync_batch",
    "sync_batch_from_json",
    "sync_text",
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
    """A MatrixEvent from raw event JSON; None for something that is not an event.

    The strings that repeat across events (type, sender, state key, the content's keys)
    are interned: a full-state answer holds the same few of them in every room, and
    10,000 rooms of copies were tens of MiB.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return None
    content = raw.get("content")
    unsigned = raw.get("unsigned")
    state_key = raw.get("state_key")
    ts = raw.get("origin_server_ts")
    return MatrixEvent(
        event_id=str(raw.get("event_id") or ""),
        room_id=str(raw.get("room_id") or room_id),
        sender=sys.intern(str(raw.get("sender") or "")),
        type=sys.intern(raw["type"]),
        content={sys.intern(k): v for k, v in content.items()} if isinstance(content, dict) else {},
        origin_server_ts=ts if isinstance(ts, int) else 0,
        state_key=sys.intern(state_key) if isinstance(state_key, str) else None,
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


def _joined_room(room_id: str, raw: Any) -> tuple[JoinedRoom, bool]:
    """One joined room of a /sync answer (see `sync_batch`), and whether it came with
    MSC4222 `state_after`."""
    room = as_dict(raw)
    timeline_section = as_dict(room.get("timeline"))
    timeline = events_from_section(timeline_section, room_id)
    after = state_after_section(room)
    if after is not None:
        state = [event for event in timeline if event.is_state]
        state.extend(events_from_section(after, room_id))
    else:
        state = events_from_section(room.get("state"), room_id)
        state.extend(event for event in timeline if event.is_state)
    prev_batch = timeline_section.get("prev_batch")
    joined = JoinedRoom(
        room_id=room_id,
        state=state,
        timeline=timeline,
        limited=bool(timeline_section.get("limited", False)),
        prev_batch=prev_batch if isinstance(prev_batch, str) else None,
    )
    return joined, after is not None


@dataclass(slots=True)
class LoadedSync:
    """A /sync answer with its joined rooms converted, the rest as JSON.

    `body` is the answer without the joined rooms (to-device messages, device lists,
    key counts, account data, invited and left rooms); `joined` the joined rooms;
    `state_after`: some joined room came with MSC4222 `state_after`.
    """

    body: dict[str, Any]
    joined: dict[str, JoinedRoom] = field(default_factory=dict)
    state_after: bool = False

    @classmethod
    def from_json(cls, body: Any) -> LoadedSync:
        """An answer already parsed whole; MatrixUnreachable without next_batch."""
        if not isinstance(body, dict) or not isinstance(body.get("next_batch"), str):
            raise MatrixUnreachable("sync answer without next_batch", status=200)
        rooms = as_dict(body.get("rooms"))
        loaded = cls({**body, "rooms": {k: v for k, v in rooms.items() if k != "join"}})
        for room_id, room in as_dict(rooms.get("join")).items():
            loaded.add(room_id, room)
        return loaded

    def add(self, room_id: str, raw: Any) -> None:
        """Convert one joined room's JSON."""
        self.joined[room_id], after = _joined_room(room_id, raw)
        self.state_after = self.state_after or after


def sync_text(raw: bytes) -> str:
    """A /sync answer's body as text: decoded before `load_sync`, so that the bytes
    (as large as the text) are freed before the rooms are converted."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MatrixUnreachable(f"sync answer is not JSON: {exc}", status=200) from exc


def load_sync(raw: bytes | str) -> LoadedSync:
    """Parse a /sync answer, converting each joined room as soon as it is read.

    A full-state answer of 10,000 rooms is tens of MB of JSON; parsed whole it is a
    tree several times that size next to the rooms converted from it, and that peak
    stays in the process's memory after it is freed. Here only one room's JSON exists
    at a time: the top level, `rooms` and `rooms.join` are walked by position, each
    value decoded by the standard library's (C) decoder. Raises MatrixUnreachable for
    an answer that is not a JSON object with next_batch.
    """
    loaded = LoadedSync({})
    try:
        text = sync_text(raw) if isinstance(raw, bytes) else raw

        def room(room_id: str, index: int) -> int:
            value, end = _DECODER.raw_decode(text, index)
            loaded.add(room_id, value)
            return end

        def rooms(key: str, index: int) -> tuple[Any, int]:
            if key == "join" and text.startswith("{", index):
                return {}, _walk_object(text, index, room)
            return _DECODER.raw_decode(text, index)

        def top(key: str, index: int) -> tuple[Any, int]:
            if key == "rooms" and text.startswith("{", index):
                return _read_object(text, index, rooms)
            return _DECODER.raw_decode(text, index)

        start = _skip_space(text, 0)
        if not text.startswith("{", start):
            raise ValueError("not a JSON object")
        loaded.body, end = _read_object(text, start, top)
        if _skip_space(text, end) != len(text):
            raise ValueError(f"extra data at {end}")
    except (ValueError, IndexError) as exc:  # JSONDecodeError among them
        raise MatrixUnreachable(f"sync answer is not JSON: {exc}", status=200) from exc
    if not isinstance(loaded.body.get("next_batch"), str):
        raise MatrixUnreachable("sync answer without next_batch", status=200)
    return loaded


_DECODER: Final = json.JSONDecoder()
_SPACE: Final = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _walk_object(text: str, index: int, value: Callable[[str, int], int]) -> int:
    """Walk the JSON object at `index` (its "{"): `value(key, at)` reads each value and
    returns where it ends. Returns the index after the closing "}". ValueError if malformed.
    """
    index = _skip_space(text, index + 1)
    if text.startswith("}", index):
        return index + 1
    while True:
        if not text.startswith('"', index):
            raise ValueError(f"expected a key at {index}")
        key, index = _DECODER.raw_decode(text, index)  # a string
        index = _skip_space(text, index)
        if not text.startswith(":", index):
            raise ValueError(f"expected ':' at {index}")
        index = _skip_space(text, value(key, _skip_space(text, index + 1)))
        if text.startswith("}", index):
            return index + 1
        if not text.startswith(",", index):
            raise ValueError(f"expected ',' or '}}' at {index}")
        index = _skip_space(text, index + 1)


def _read_object(
    text: str, index: int, value: Callable[[str, int], tuple[Any, int]]
) -> tuple[dict[str, Any], int]:
    """The JSON object at `index` as a dict, each value read by `value(key, at)`."""
    result: dict[str, Any] = {}

    def put(key: str, at: int) -> int:
        result[key], end = value(key, at)
        return end

    return result, _walk_object(text, index, put)


def sync_batch_from_json(body: Any, own_user_id: str) -> SyncBatch:
    """`sync_batch` of an answer already parsed whole (MatrixUnreachable without next_batch)."""
    return sync_batch(LoadedSync.from_json(body), own_user_id)


def sync_batch(loaded: LoadedSync, own_user_id: str) -> SyncBatch:
    """Convert a loaded ``/sync`` answer into a SyncBatch.

    A joined room's ``state`` holds the ``state`` section first, then the state events
    found in the timeline, in order: folding it into a dict keyed by (type, state_key)
    gives the current state. With MSC4222 (the query asked for it and the server
    honours it) the room has ``state_after`` instead of ``state``: the state as of the
    end of the timeline, so it comes after the timeline's state events, and the batch
    says so (``SyncBatch.state_after``).
    """
    body = loaded.body
    rooms = as_dict(body.get("rooms"))
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
        joined=loaded.joined,
        invited=invited,
        left=list(as_dict(rooms.get("leave"))),
        account_data=account_data,
        state_after=loaded.state_after,
    )
