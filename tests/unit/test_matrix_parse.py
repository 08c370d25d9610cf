"""runtime/matrix/parse.py: error mapping and reading a raw /sync answer.

The adapter against a real Synapse is tested in tests/e2e/test_matrix_nio.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.matrix import (
    MatrixAuthError,
    MatrixRateLimited,
    MatrixRequestError,
    MatrixUnreachable,
    SyncBatch,
)
from runtime.matrix import nio_adapter
from runtime.matrix.parse import error_for, load_sync, sync_batch, sync_batch_from_json

BOT = "@bot:localhost"
ROOM = "!room:localhost"


def _event(type_: str, *, state_key: str | None = None, **content: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": type_,
        "event_id": f"${type_}-{state_key}-{sorted(content.items())}",
        "sender": "@alice:localhost",
        "content": content,
        "origin_server_ts": 1700000000000,
    }
    if state_key is not None:
        event["state_key"] = state_key
    return event


# --- error_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "errcode", "login", "expected"),
    [
        (401, "M_UNKNOWN_TOKEN", False, MatrixAuthError),
        (401, "M_MISSING_TOKEN", False, MatrixAuthError),
        (403, "M_FORBIDDEN", True, MatrixAuthError),
        (403, "M_FORBIDDEN", False, MatrixRequestError),
        (429, "M_LIMIT_EXCEEDED", False, MatrixRateLimited),
        (502, None, False, MatrixUnreachable),
        (500, "M_UNKNOWN", True, MatrixUnreachable),
        (404, "M_NOT_FOUND", False, MatrixRequestError),
    ],
)
def test_error_for_maps_status_and_errcode(
    status: int, errcode: str | None, login: bool, expected: type[Exception]
) -> None:
    error = error_for(status, errcode, "nope", login=login)

    assert type(error) is expected
    assert error.status == status
    assert error.errcode == errcode


def test_error_for_rate_limit_takes_retry_after_from_retry_after_ms() -> None:
    error = error_for(429, "M_LIMIT_EXCEEDED", "slow down", retry_after_ms=1500)

    assert isinstance(error, MatrixRateLimited)
    assert error.retry_after == 1.5


def test_public_api_is_pinned() -> None:
    assert nio_adapter.__all__ == ["NioMatrix"]


# --- sync_batch_from_json, load_sync ----------------------------------------------------


def convert(body: Any) -> SyncBatch:
    """Both readers of a sync answer agree: parsed whole, and room by room from its text."""
    whole = sync_batch_from_json(body, BOT)
    assert sync_batch(load_sync(json.dumps(body, indent=1)), BOT) == whole
    assert sync_batch(load_sync(json.dumps(body, separators=(",", ":")).encode()), BOT) == whole
    return whole


def test_joined_room_state_is_the_state_section_then_the_timelines_state_events() -> None:
    old_name = _event("m.room.name", state_key="", name="old")
    message = _event("m.room.message", body="hi", msgtype="m.text")
    new_name = _event("m.room.name", state_key="", name="new")
    body = {
        "next_batch": "s1",
        "rooms": {
            "join": {
                ROOM: {
                    "state": {"events": [old_name]},
                    "timeline": {
                        "events": [message, new_name],
                        "limited": True,
                        "prev_batch": "p0",
                    },
                }
            }
        },
    }

    room = convert(body).joined[ROOM]

    assert [e.content.get("name") for e in room.state] == ["old", "new"]
    assert [e.type for e in room.timeline] == ["m.room.message", "m.room.name"]
    assert room.limited is True
    assert room.prev_batch == "p0"
    assert {e.room_id for e in room.timeline} == {ROOM}  # filled in from the room key


@pytest.mark.parametrize("key", ["state_after", "org.matrix.msc4222.state_after"])
def test_state_after_comes_after_the_timelines_state_events(key: str) -> None:
    # MSC4222: state_after is the state at the end of the timeline. At a forked tip the
    # timeline's last name event can be on the branch that lost; state_after has the winner.
    timeline_name = _event("m.room.name", state_key="", name="in the timeline")
    current = _event("m.room.name", state_key="", name="current")
    body = {
        "next_batch": "s1",
        "rooms": {
            "join": {ROOM: {key: {"events": [current]}, "timeline": {"events": [timeline_name]}}}
        },
    }

    batch = convert(body)

    assert batch.state_after is True
    folded = {(e.type, e.state_key): e.content["name"] for e in batch.joined[ROOM].state}
    assert folded == {("m.room.name", ""): "current"}
    assert [e.content["name"] for e in batch.joined[ROOM].timeline] == ["in the timeline"]


def test_an_answer_with_state_sections_is_not_state_after() -> None:
    body = {"next_batch": "s1", "rooms": {"join": {ROOM: {"state": {"events": []}}}}}

    assert convert(body).state_after is False


def test_invite_takes_inviter_and_is_direct_from_the_bots_own_member_event() -> None:
    own_invite = _event("m.room.member", state_key=BOT, membership="invite", is_direct=True)
    own_invite["sender"] = "@carol:localhost"
    someone_else = _event("m.room.member", state_key="@dave:localhost", membership="invite")
    body = {
        "next_batch": "s1",
        "rooms": {"invite": {ROOM: {"invite_state": {"events": [own_invite, someone_else]}}}},
    }

    invite = convert(body).invited[ROOM]

    assert invite.inviter == "@carol:localhost"
    assert invite.is_direct is True
    assert len(invite.state) == 2


def test_invite_without_the_bots_member_event_has_no_inviter_and_is_not_direct() -> None:
    body = {"next_batch": "s1", "rooms": {"invite": {ROOM: {}}}}

    invite = convert(body).invited[ROOM]

    assert (invite.inviter, invite.is_direct) == (None, False)


def test_left_rooms_and_global_account_data() -> None:
    body = {
        "next_batch": "s2",
        "rooms": {"leave": {ROOM: {}, "!other:localhost": {}}},
        "account_data": {"events": [_event("lambda.surface.sequence", reserved_through=7)]},
    }

    batch = convert(body)

    assert batch.next_batch == "s2"
    assert sorted(batch.left) == ["!other:localhost", ROOM]
    assert batch.account_data == {"lambda.surface.sequence": {"reserved_through": 7}}


def test_garbage_inside_a_valid_answer_is_skipped_not_fatal() -> None:
    body = {
        "next_batch": "s1",
        "rooms": {
            "join": {
                ROOM: {
                    "state": {"events": ["not an event", {"no": "type"}, None]},
                    "timeline": {
                        "events": [
                            {"type": "m.room.message", "content": "not a dict", "unsigned": 3}
                        ],
                        "prev_batch": 5,
                    },
                },
                "!broken:localhost": "not a room",
            },
            "invite": [],
        },
    }

    batch = convert(body)

    room = batch.joined[ROOM]
    assert room.state == []
    [event] = room.timeline
    assert (event.content, event.unsigned, event.event_id) == ({}, {}, "")
    assert room.prev_batch is None
    assert batch.joined["!broken:localhost"].timeline == []
    assert batch.invited == {}


@pytest.mark.parametrize("body", [None, [], {}, {"next_batch": 5}, {"rooms": {}}])
def test_an_answer_without_next_batch_is_refused(body: Any) -> None:
    with pytest.raises(MatrixUnreachable, match="next_batch"):
        sync_batch_from_json(body, BOT)
    with pytest.raises(MatrixUnreachable, match=r"next_batch|not a JSON object"):
        load_sync(json.dumps(body))


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"\xff\xfe{}",
        "{",
        '{"next_batch": "s1",}',
        '{"next_batch": "s1" "rooms": {}}',
        '{"next_batch": "s1", 5: 1}',
        '{"next_batch": "s1", "rooms": {"join": {"!a:x": }}}',
        '{"next_batch": "s1", "rooms": {"join": {"!a:x": {}}}',
        '{"next_batch": "s1"} {}',
    ],
)
def test_a_sync_answer_that_is_not_json_is_refused_with_where(text: str | bytes) -> None:
    with pytest.raises(MatrixUnreachable, match="not JSON"):
        load_sync(text)


def test_room_by_room_reading_keeps_everything_but_the_joined_rooms_as_json() -> None:
    body = {
        "next_batch": "s1",
        "to_device": {"events": [{"type": "m.room_key", "content": {"k": 1}}]},
        "device_one_time_keys_count": {"signed_curve25519": 7},
        "rooms": {
            "join": {ROOM: {"timeline": {"events": [_event("m.room.message", body="hi")]}}},
            "leave": {"!gone:localhost": {}},
        },
    }

    loaded = load_sync(json.dumps(body))

    assert loaded.body["to_device"] == body["to_device"]
    assert loaded.body["device_one_time_keys_count"] == {"signed_curve25519": 7}
    assert loaded.body["rooms"] == {"join": {}, "leave": {"!gone:localhost": {}}}
    assert [e.content for e in loaded.joined[ROOM].timeline] == [{"body": "hi"}]
