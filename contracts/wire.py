"""Wire protocol v1 between the bot and an HTTP agent platform.

JSON over HTTP. Every request carries the header `X-Surface-Wire-Version: 1`
(a server answers a request with another version with 400
`unsupported_version`; a missing header is read as 1) and, when the platform
is configured with a token, `Authorization: Bearer <token>`. Every JSON body
below is the named model of this module; every response carries the header
too. Models are closed: an unknown field is an error, so any addition bumps
the version, with one exception: optional fields of `TurnRequest` added within
v1 (`thread_id`, `quoted`) are left out of the body when unset
(`TurnRequest.to_json`), so a platform from before them still accepts every turn
that does not use them.

Endpoints:

    POST /v1/turns              TurnRequest          -> 200 application/x-ndjson
    POST /v1/chats/disconnect   DisconnectRequest    -> 200 DisconnectResponse
    POST /v1/snapshots/save     SaveSnapshotRequest  -> 200 Snapshot
    POST /v1/snapshots/list     ListSnapshotsRequest -> 200 ListSnapshotsResponse
    POST /v1/snapshots/load     LoadSnapshotRequest  -> 200 ContextInfo
    POST /v1/context            ContextRequest       -> 200 ContextInfo
    GET  /v1/health             (no body, no auth)   -> 200 HealthResponse

A turn streams one JSON event per line (`TurnEvent`: the event models of
contracts.platform, discriminated by `type`): any number of `text_delta`,
`file` and `status` lines, then exactly one terminal `done` or `error` line,
then the server closes the stream. A stream that ends without a terminal line
means the platform broke off; the turn may or may not have been recorded.

Idempotency: `TurnRequest.idempotency_key` (the Matrix event id) names the
turn within its (agent_id, platform_chat_id). A platform answers a repeated
key with the recorded reply and never appends it to memory twice, so a client
may resend a turn it got no event for. Snapshot saves are not idempotent;
the other calls are.

Errors before a stream starts (and for every other endpoint) are a non-2xx
status with an `ErrorResponse` body: 4xx means the request is refused and must
not be retried as is (`bad_request`, `unauthorized`, `unsupported_version`,
`not_found`, `snapshot_not_found`); 5xx and 429 mean the platform is in
trouble and a safe request may be retried later. `TurnFailed.code` values a
client should expect: `agent_error`, `upstream_unavailable`, `upstream_error`,
`bad_request`.

`wire_json_schema()` renders every model as one JSON Schema document, kept in
`contracts/schemas/wire-v1.json`; regenerate it with `python -m contracts.wire`
(`--check` only compares).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from contracts.platform import (
    ContextInfo,
    EmittedFile,
    PlatformEvent,
    QuotedMessage,
    Snapshot,
    StatusUpdate,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)

__all__ = [
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

WIRE_VERSION: Final = "1"
WIRE_VERSION_HEADER: Final = "X-Surface-Wire-Version"
NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
SCHEMA_PATH: Final = Path(__file__).parent / "schemas" / f"wire-v{WIRE_VERSION}.json"

# One line of a turn stream: the platform events, reused as they are.
TurnEvent = PlatformEvent
_TURN_EVENT: TypeAdapter[PlatformEvent] = TypeAdapter(PlatformEvent)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TurnRequest(_Wire):
    """Body of `POST /v1/turns`: one user message for one platform chat."""

    version: Literal["1"] = WIRE_VERSION
    agent_id: str = Field(min_length=1)
    platform_chat_id: str = Field(min_length=1)
    text: str
    attachments: list[str] = Field(
        default_factory=list,
        description="Workspace-relative paths of files the user attached.",
    )
    idempotency_key: str = Field(
        min_length=1, description="Names the turn; a repeat gets the recorded reply."
    )
    sender: str | None = Field(default=None, description="Matrix user id of the author.")
    thread_id: str | None = Field(
        default=None,
        description="Root event id of the Matrix thread the message was written in; "
        "absent outside a thread (added within v1).",
    )
    quoted: QuotedMessage | None = Field(
        default=None,
        description="The earlier message this one replies to, as context; absent when "
        "the message is no reply (added within v1).",
    )

    @field_validator("attachments")
    @classmethod
    def _relative_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            pure = PurePosixPath(path)
            if not path or "\x00" in path or pure.is_absolute() or ".." in pure.parts:
                raise ValueError(
                    f"attachment {path!r} must be a relative path inside the workspace"
                )
        return paths

    @classmethod
    def from_turn(cls, turn: UserTurn) -> TurnRequest:
        return cls(
            agent_id=turn.agent_id,
            platform_chat_id=turn.platform_chat_id,
            text=turn.text,
            attachments=list(turn.attachments),
            idempotency_key=turn.idempotency_key,
            sender=turn.sender,
            thread_id=turn.thread_id,
            quoted=turn.quoted,
        )

    def to_json(self) -> str:
        """The request body; unset optional fields are left out (see the module doc)."""
        return self.model_dump_json(exclude_none=True)


class DisconnectRequest(_Wire):
    """Body of `POST /v1/chats/disconnect`: drop the chat's live session (memory stays)."""

    agent_id: str = Field(min_length=1)
    platform_chat_id: str = Field(min_length=1)


class DisconnectResponse(_Wire):
    disconnected: bool = Field(description="Whether a live session existed.")


class SaveSnapshotRequest(_Wire):
    """Body of `POST /v1/snapshots/save`; answered with the new `Snapshot`."""

    agent_id: str = Field(min_length=1)
    platform_chat_id: str = Field(min_length=1)
    owner: str = Field(min_length=1, description="Matrix user id the snapshot belongs to.")
    name: str = Field(min_length=1, max_length=200)


class ListSnapshotsRequest(_Wire):
    """Body of `POST /v1/snapshots/list`."""

    agent_id: str = Field(min_length=1)
    owner: str = Field(min_length=1)


class ListSnapshotsResponse(_Wire):
    snapshots: list[Snapshot] = Field(description="The owner's snapshots, oldest first.")


class LoadSnapshotRequest(_Wire):
    """Body of `POST /v1/snapshots/load`: replace the chat's memory; answered with ContextInfo."""

    agent_id: str = Field(min_length=1)
    platform_chat_id: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    snapshot_id: str = Field(min_length=1)


class ContextRequest(_Wire):
    """Body of `POST /v1/context`; answered with ContextInfo."""

    agent_id: str = Field(min_length=1)
    platform_chat_id: str = Field(min_length=1)


class HealthResponse(_Wire):
    """Body of `GET /v1/health`."""

    ok: bool
    wire_version: str = Field(description="The wire version the service speaks.")
    service: str = Field(description="Name and version of the service.")
    detail: str | None = None


class ErrorResponse(_Wire):
    """Body of every non-2xx answer."""

    code: str = Field(description="Machine-readable reason, e.g. bad_request, unauthorized.")
    message: str = Field(description="For humans; says what to change.")


@dataclass(frozen=True)
class Endpoint:
    method: Literal["GET", "POST"]
    path: str
    request: type[BaseModel] | None
    response: str  # a definition name in the schema document
    summary: str


ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint("POST", "/v1/turns", TurnRequest, "TurnEvent", "Send a user turn; NDJSON stream."),
    Endpoint(
        "POST",
        "/v1/chats/disconnect",
        DisconnectRequest,
        "DisconnectResponse",
        "Drop a chat's live session.",
    ),
    Endpoint("POST", "/v1/snapshots/save", SaveSnapshotRequest, "Snapshot", "Snapshot a chat."),
    Endpoint(
        "POST",
        "/v1/snapshots/list",
        ListSnapshotsRequest,
        "ListSnapshotsResponse",
        "An owner's snapshots for an agent.",
    ),
    Endpoint(
        "POST", "/v1/snapshots/load", LoadSnapshotRequest, "ContextInfo", "Restore a snapshot."
    ),
    Endpoint("POST", "/v1/context", ContextRequest, "ContextInfo", "What the platform knows."),
    Endpoint("GET", "/v1/health", None, "HealthResponse", "Liveness; needs no token."),
)


def encode_event(event: PlatformEvent) -> bytes:
    """One NDJSON line (with its newline) for a turn stream."""
    return event.model_dump_json().encode() + b"\n"


def decode_event(line: str | bytes) -> PlatformEvent:
    """Parse one line of a turn stream; raises pydantic.ValidationError if it is not an event."""
    return _TURN_EVENT.validate_json(line)


_MODELS: tuple[type[BaseModel], ...] = (
    TurnRequest,
    QuotedMessage,
    TextDelta,
    EmittedFile,
    StatusUpdate,
    TurnDone,
    TurnFailed,
    DisconnectRequest,
    DisconnectResponse,
    SaveSnapshotRequest,
    Snapshot,
    ListSnapshotsRequest,
    ListSnapshotsResponse,
    LoadSnapshotRequest,
    ContextRequest,
    ContextInfo,
    HealthResponse,
    ErrorResponse,
)
_REF = "#/$defs/{model}"


def wire_json_schema() -> dict[str, Any]:
    """Every wire model as one JSON Schema document (draft 2020-12), definitions in `$defs`."""
    pairs: Sequence[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in _MODELS]
    _, document = models_json_schema(pairs, ref_template=_REF)
    defs: dict[str, Any] = document["$defs"]
    event_schema = _TURN_EVENT.json_schema(ref_template=_REF)
    for name, definition in event_schema.pop("$defs", {}).items():
        if defs.setdefault(name, definition) != definition:
            raise RuntimeError(f"two different schema definitions named {name!r}")
    event_schema["description"] = "One line of a POST /v1/turns response stream."
    defs["TurnEvent"] = event_schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://lambda-surface.invalid/schemas/wire-v{WIRE_VERSION}.json",
        "title": f"lambda-surface agent platform wire protocol v{WIRE_VERSION}",
        "description": (
            "JSON over HTTP; a turn answers with application/x-ndjson, one TurnEvent per line. "
            f"Every request sends the header {WIRE_VERSION_HEADER}: {WIRE_VERSION}. "
            "See contracts/wire.py."
        ),
        "x-wire-version": WIRE_VERSION,
        "x-endpoints": [
            {
                "method": e.method,
                "path": e.path,
                "request": None if e.request is None else f"#/$defs/{e.request.__name__}",
                "response": f"#/$defs/{e.response}",
                "errors": "#/$defs/ErrorResponse",
                "summary": e.summary,
            }
            for e in ENDPOINTS
        ],
        "$defs": dict(sorted(defs.items())),
    }


def render_schema() -> str:
    """The schema document exactly as committed."""
    return json.dumps(wire_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.wire", description=f"Write {SCHEMA_PATH.name} from the models."
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    args = parser.parse_args(argv)
    rendered = render_schema()
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else None
    if args.check:
        if current != rendered:
            print(f"{SCHEMA_PATH} is out of date; run `uv run python -m contracts.wire`.")
            return 1
        print(f"{SCHEMA_PATH} is up to date.")
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(rendered, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
