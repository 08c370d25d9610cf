from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from contracts import wire
from contracts.platform import (
    EmittedFile,
    QuotedMessage,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from contracts.wire import (
    SCHEMA_PATH,
    ErrorResponse,
    TurnRequest,
    decode_event,
    encode_event,
    wire_json_schema,
)


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", **schema})


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

    assert committed == wire_json_schema(), (
        f"{SCHEMA_PATH} no longer matches contracts/wire.py; regenerate it with "
        "`uv run python -m contracts.wire` and commit the result"
    )


def test_committed_schema_is_byte_exact() -> None:
    assert wire.main(["--check"]) == 0, "regenerate with `uv run python -m contracts.wire`"


def test_schema_is_a_valid_draft_2020_12_document() -> None:
    jsonschema.Draft202012Validator.check_schema(wire_json_schema())


def test_every_endpoint_names_definitions_that_exist() -> None:
    schema = wire_json_schema()
    defs = schema["$defs"]
    for endpoint in schema["x-endpoints"]:
        for key in ("request", "response", "errors"):
            ref = endpoint[key]
            if ref is not None:
                assert ref.removeprefix("#/$defs/") in defs, (endpoint["path"], ref)
    assert {e["path"] for e in schema["x-endpoints"]} == {
        "/v1/turns",
        "/v1/chats/disconnect",
        "/v1/snapshots/save",
        "/v1/snapshots/list",
        "/v1/snapshots/load",
        "/v1/context",
        "/v1/health",
    }


def test_a_serialised_turn_request_validates_against_the_schema() -> None:
    turn = UserTurn(
        agent_id="helper",
        platform_chat_id="42",
        text="hi",
        attachments=("surfaces/matrix/a/b/inbox/1-x.txt",),
        idempotency_key="$event:example.org",
        sender="@alice:example.org",
    )
    body: dict[str, Any] = json.loads(TurnRequest.from_turn(turn).model_dump_json())

    _validator("TurnRequest").validate(body)
    assert body["version"] == "1"


def test_schema_rejects_unknown_fields_like_the_models() -> None:
    body = {"agent_id": "a", "platform_chat_id": "1", "text": "x", "idempotency_key": "k", "x": 1}

    with pytest.raises(jsonschema.ValidationError):
        _validator("TurnRequest").validate(body)
    with pytest.raises(ValidationError):
        TurnRequest.model_validate(body)


@pytest.mark.parametrize(
    "event",
    [
        TextDelta(text="he"),
        EmittedFile(path="agent-out/x.txt", mimetype="text/plain"),
        TurnDone(text="hello"),
        TurnFailed(code="agent_error", message="boom"),
    ],
)
def test_stream_lines_round_trip_and_match_the_schema(event: Any) -> None:
    line = encode_event(event)

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert decode_event(line) == event
    _validator("TurnEvent").validate(json.loads(line))


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../b", "", "a\x00b"])
def test_turn_request_refuses_attachments_outside_the_workspace(path: str) -> None:
    with pytest.raises(ValidationError, match="relative path inside the workspace"):
        TurnRequest(
            agent_id="a", platform_chat_id="1", text="", idempotency_key="k", attachments=[path]
        )


def test_turn_request_refuses_another_wire_version() -> None:
    with pytest.raises(ValidationError):
        TurnRequest.model_validate(
            {
                "version": "2",
                "agent_id": "a",
                "platform_chat_id": "1",
                "text": "",
                "idempotency_key": "k",
            }
        )


def test_error_response_shape() -> None:
    _validator("ErrorResponse").validate(
        ErrorResponse(code="bad_request", message="field 'text' is missing").model_dump()
    )


def test_public_names_are_pinned() -> None:
    assert sorted(wire.__all__) == sorted(
        [
            "ENDPOINTS",
            "NDJSON_MEDIA_TYPE",
            "SCHEMA_PATH",
            "WIRE_VERSION",
            "WIRE_VERSION_HEADER",
            "ContextRequest",
            "DisconnectRequest",
            "DisconnectResponse",
            "Endpoint",
            "ErrorResponse",
            "HealthResponse",
            "ListSnapshotsRequest",
            "ListSnapshotsResponse",
            "LoadSnapshotRequest",
            "SaveSnapshotRequest",
            "TurnEvent",
            "TurnRequest",
            "decode_event",
            "encode_event",
            "wire_json_schema",
        ]
    )
    for name in wire.__all__:
        assert hasattr(wire, name), name


def test_a_turn_in_a_thread_with_a_quote_validates_and_unset_fields_are_left_out() -> None:
    plain = UserTurn(agent_id="a", platform_chat_id="1", text="x", idempotency_key="$k")
    threaded = plain.model_copy(
        update={
            "thread_id": "$root",
            "quoted": QuotedMessage(event_id="$q", sender="@b:x", text="earlier"),
        }
    )

    plain_body = json.loads(TurnRequest.from_turn(plain).to_json())
    threaded_body = json.loads(TurnRequest.from_turn(threaded).to_json())

    assert "thread_id" not in plain_body and "quoted" not in plain_body  # a v1 server accepts it
    _validator("TurnRequest").validate(threaded_body)
    assert threaded_body["thread_id"] == "$root"
    assert TurnRequest.model_validate(threaded_body).quoted == threaded.quoted
