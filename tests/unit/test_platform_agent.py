"""The reference platform-agent, spoken to over wire v1 in-process (httpx.ASGITransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from contracts.platform import (
    ContextInfo,
    EmittedFile,
    PlatformEvent,
    Snapshot,
    TextDelta,
    TurnDone,
    TurnFailed,
)
from contracts.wire import (
    NDJSON_MEDIA_TYPE,
    WIRE_VERSION_HEADER,
    ErrorResponse,
    HealthResponse,
    ListSnapshotsResponse,
    decode_event,
)
from platform_agent import AgentServiceConfig, ConfigError, config_from_env, create_app
from platform_agent.backends import sse_data

CHAT = {"agent_id": "helper", "platform_chat_id": "7"}


def _config(tmp_path: Path, **overrides: Any) -> AgentServiceConfig:
    values: dict[str, Any] = {"db_path": tmp_path / "agent.db", "workspace": tmp_path / "ws"}
    values.update(overrides)
    return AgentServiceConfig(**values)


@asynccontextmanager
async def agent_client(
    config: AgentServiceConfig, *, upstream: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, upstream_transport=upstream)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://platform-agent",
            headers={WIRE_VERSION_HEADER: "1"},
        ) as client:
            yield client
    finally:
        await app.state.service.aclose()


async def turn(client: httpx.AsyncClient, text: str, key: str, **extra: Any) -> list[PlatformEvent]:
    body = {**CHAT, "text": text, "idempotency_key": key, **extra}
    response = await client.post("/v1/turns", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NDJSON_MEDIA_TYPE)
    assert response.headers[WIRE_VERSION_HEADER] == "1"
    return [decode_event(line) for line in response.text.splitlines() if line]


async def context(client: httpx.AsyncClient, chat: dict[str, str] = CHAT) -> ContextInfo:
    response = await client.post("/v1/context", json=chat)
    assert response.status_code == 200, response.text
    return ContextInfo.model_validate_json(response.content)


def text_of(events: list[PlatformEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- echo turns ----------------------------------------------------------------------------------


async def test_echo_streams_the_text_verbatim_in_several_deltas(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        events = await turn(client, "hello *world*", "$e1")

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert text_of(events) == "echo: hello *world*"
    assert events[-1] == TurnDone(text="echo: hello *world*")


async def test_echo_stream_hook_sets_the_pause_and_the_number_of_pieces(tmp_path: Path) -> None:
    text = "a long answer, please !stream 0 12"
    async with agent_client(_config(tmp_path)) as client:
        events = await turn(client, text, "$e1")

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert 10 <= len(deltas) <= 12  # about that many: pieces of equal length
    assert text_of(events) == f"echo: {text}"


async def test_echo_lists_the_attachments(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        events = await turn(client, "see file", "$e1", attachments=["inbox/a.txt", "inbox/b.png"])

    assert text_of(events) == "echo: see file\n\nattachments: inbox/a.txt, inbox/b.png"


async def test_replayed_key_streams_the_recorded_reply_without_answering_again(
    tmp_path: Path,
) -> None:
    async with agent_client(_config(tmp_path)) as client:
        first = await turn(client, "once", "$same")
        again = await turn(client, "once", "$same")
        info = await context(client)

    assert text_of(again) == text_of(first) == "echo: once"
    assert again[-1] == first[-1]
    assert info.turns == 1


async def test_same_key_in_another_chat_is_another_turn(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        await turn(client, "a", "$k")
        await turn(client, "b", "$k", platform_chat_id="8")
        here, there = (
            await context(client),
            await context(client, {**CHAT, "platform_chat_id": "8"}),
        )

    assert (here.turns, there.turns) == (1, 1)


async def test_emit_writes_the_file_into_the_workspace_and_emits_its_relative_path(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    async with agent_client(config) as client:
        events = await turn(client, "make one !emit report.txt", "$e1")
        replay = await turn(client, "make one !emit report.txt", "$e1")

    emitted = [e for e in events if isinstance(e, EmittedFile)]
    assert emitted == [EmittedFile(path="agent-out/report.txt", mimetype="text/plain")]
    assert (config.workspace / "agent-out" / "report.txt").read_text(encoding="utf-8")
    assert [e for e in replay if isinstance(e, EmittedFile)] == emitted
    assert isinstance(events[-1], TurnDone)


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b"])
async def test_emit_refuses_names_that_could_leave_agent_out(tmp_path: Path, name: str) -> None:
    config = _config(tmp_path)
    async with agent_client(config) as client:
        events = await turn(client, f"!emit {name}", "$e1")
        info = await context(client)

    assert isinstance(events[-1], TurnFailed)
    assert events[-1].code == "bad_request"
    assert info.turns == 0
    assert not (tmp_path / "escape").exists()


async def test_memory_survives_a_restart_with_the_same_database(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with agent_client(config) as client:
        await turn(client, "remember me", "$e1")

    async with agent_client(config) as client:
        before = await context(client)
        replay = await turn(client, "remember me", "$e1")
        after = await context(client)

    assert before.turns == after.turns == 1
    assert text_of(replay) == "echo: remember me"


async def test_disconnect_reports_whether_a_session_was_live(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        await turn(client, "hi", "$e1")
        first = await client.post("/v1/chats/disconnect", json=CHAT)
        second = await client.post("/v1/chats/disconnect", json=CHAT)
        info = await context(client)

    assert first.json() == {"disconnected": True}
    assert second.json() == {"disconnected": False}
    assert info.turns == 1  # disconnect drops the session, not the memory
    assert info.details["session"] == "idle"


# -- snapshots -----------------------------------------------------------------------------------


async def test_snapshots_save_list_and_load_per_owner(tmp_path: Path) -> None:
    owner = {"owner": "@alice:example.org"}
    async with agent_client(_config(tmp_path)) as client:
        await turn(client, "one", "$e1")
        saved = await client.post("/v1/snapshots/save", json={**CHAT, **owner, "name": "early"})
        await turn(client, "two", "$e2")
        await client.post("/v1/snapshots/save", json={**CHAT, **owner, "name": "late"})
        listed = await client.post("/v1/snapshots/list", json={"agent_id": "helper", **owner})
        others = await client.post(
            "/v1/snapshots/list", json={"agent_id": "helper", "owner": "@bob:example.org"}
        )
        first = Snapshot.model_validate_json(saved.content)
        loaded = await client.post(
            "/v1/snapshots/load",
            json={**CHAT, "platform_chat_id": "9", **owner, "snapshot_id": first.snapshot_id},
        )

    snapshots = ListSnapshotsResponse.model_validate_json(listed.content).snapshots
    assert [(s.name, s.turns) for s in snapshots] == [("early", 1), ("late", 2)]
    assert ListSnapshotsResponse.model_validate_json(others.content).snapshots == []
    info = ContextInfo.model_validate_json(loaded.content)
    assert (info.platform_chat_id, info.turns) == ("9", 1)


async def test_loading_someone_elses_snapshot_is_not_found(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        saved = await client.post(
            "/v1/snapshots/save", json={**CHAT, "owner": "@alice:example.org", "name": "mine"}
        )
        snapshot_id = Snapshot.model_validate_json(saved.content).snapshot_id
        response = await client.post(
            "/v1/snapshots/load",
            json={**CHAT, "owner": "@bob:example.org", "snapshot_id": snapshot_id},
        )

    assert response.status_code == 404
    assert ErrorResponse.model_validate_json(response.content).code == "snapshot_not_found"


async def test_context_counts_snapshots_of_this_chat(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        await turn(client, "one", "$e1")
        for name in ("a", "b"):
            await client.post(
                "/v1/snapshots/save", json={**CHAT, "owner": "@alice:example.org", "name": name}
            )
        info = await context(client)

    assert (info.turns, info.snapshots) == (1, 2)
    assert info.details["backend"] == "echo"


# -- protocol edges ------------------------------------------------------------------------------


async def test_health_answers_on_both_paths_without_a_token(tmp_path: Path) -> None:
    config = _config(tmp_path, token=SecretStr("s3cret"))
    async with agent_client(config) as client:
        answers = [await client.get(path) for path in ("/v1/health", "/health")]

    for answer in answers:
        assert answer.status_code == 200
        health = HealthResponse.model_validate_json(answer.content)
        assert health.ok
        assert health.wire_version == "1"


async def test_a_configured_token_is_required(tmp_path: Path) -> None:
    config = _config(tmp_path, token=SecretStr("s3cret"))
    async with agent_client(config) as client:
        refused = await client.post("/v1/context", json=CHAT)
        wrong = await client.post(
            "/v1/context", json=CHAT, headers={"Authorization": "Bearer nope"}
        )
        allowed = await client.post(
            "/v1/context", json=CHAT, headers={"Authorization": "Bearer s3cret"}
        )

    assert refused.status_code == wrong.status_code == 401
    error = ErrorResponse.model_validate_json(refused.content)
    assert error.code == "unauthorized"
    assert "s3cret" not in error.message
    assert allowed.status_code == 200


async def test_another_wire_version_is_refused(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        response = await client.post("/v1/context", json=CHAT, headers={WIRE_VERSION_HEADER: "2"})

    assert response.status_code == 400
    assert ErrorResponse.model_validate_json(response.content).code == "unsupported_version"


async def test_an_invalid_body_is_refused_naming_the_field(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        response = await client.post("/v1/turns", json={**CHAT, "text": "no key"})

    assert response.status_code == 400
    error = ErrorResponse.model_validate_json(response.content)
    assert error.code == "bad_request"
    assert "idempotency_key" in error.message


async def test_an_unknown_path_is_a_json_404(tmp_path: Path) -> None:
    async with agent_client(_config(tmp_path)) as client:
        response = await client.post("/v1/nope", json={})

    assert response.status_code == 404
    assert ErrorResponse.model_validate_json(response.content).code == "not_found"


# -- openai backend ------------------------------------------------------------------------------


class FakeOpenAI:
    """A tiny OpenAI-compatible chat-completions endpoint that records requests."""

    def __init__(self, pieces: list[str], *, status: int = 200) -> None:
        self.pieces = pieces
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])]
        )

    async def complete(self, request: Request) -> Response:
        self.requests.append(await request.json())
        self.auth.append(request.headers.get("authorization"))
        if self.status != 200:
            return JSONResponse({"error": {"message": "model overloaded"}}, status_code=self.status)

        async def stream() -> AsyncIterator[str]:
            yield ": keep-alive\n\n"
            yield 'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
            for piece in self.pieces:
                yield "data: " + json.dumps({"choices": [{"delta": {"content": piece}}]}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


def _openai_config(tmp_path: Path) -> AgentServiceConfig:
    return _config(
        tmp_path,
        backend="openai",
        openai_base_url="http://fake-openai/v1",
        openai_model="tiny-1",
        openai_api_key=SecretStr("sk-test"),
    )


async def test_openai_backend_streams_the_model_and_sends_the_history(tmp_path: Path) -> None:
    fake = FakeOpenAI(["Hel", "lo", "!"])
    upstream = httpx.ASGITransport(app=fake.app)
    async with agent_client(_openai_config(tmp_path), upstream=upstream) as client:
        first = await turn(client, "hi", "$e1")
        second = await turn(client, "again", "$e2", attachments=["inbox/x.txt"])
        replay = await turn(client, "again", "$e2")

    assert text_of(first) == "Hello!"
    assert first[-1] == TurnDone(text="Hello!")
    assert text_of(second) == text_of(replay) == "Hello!"
    assert len(fake.requests) == 2  # the replay did not reach the model
    assert fake.requests[1]["model"] == "tiny-1"
    assert fake.requests[1]["stream"] is True
    assert fake.requests[1]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "again\n\n[attached files: inbox/x.txt]"},
    ]
    assert fake.auth == ["Bearer sk-test", "Bearer sk-test"]


async def test_openai_upstream_error_fails_the_turn_and_records_nothing(tmp_path: Path) -> None:
    fake = FakeOpenAI([], status=503)
    upstream = httpx.ASGITransport(app=fake.app)
    async with agent_client(_openai_config(tmp_path), upstream=upstream) as client:
        events = await turn(client, "hi", "$e1")
        info = await context(client)

    assert isinstance(events[-1], TurnFailed)
    assert events[-1].code == "upstream_error"
    assert "503" in events[-1].message
    assert info.turns == 0


async def test_openai_unreachable_fails_the_turn_as_upstream_unavailable(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with agent_client(
        _openai_config(tmp_path), upstream=httpx.MockTransport(refuse)
    ) as client:
        events = await turn(client, "hi", "$e1")

    assert events == [
        TurnFailed(
            code="upstream_unavailable", message="cannot reach the model endpoint (ConnectError)"
        )
    ]


async def test_sse_parser_joins_multiline_data_and_skips_comments() -> None:
    raw = [": comment", "event: x", "data: a", "data:b", "", "", "data: [DONE]"]

    async def lines() -> AsyncIterator[str]:
        for line in raw:
            yield line

    assert [d async for d in sse_data(lines())] == ["a\nb", "[DONE]"]


# -- configuration -------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = config_from_env({})

    assert (config.host, config.port, config.backend) == ("127.0.0.1", 8090, "echo")
    assert config.token is None


def test_config_reads_every_variable() -> None:
    config = config_from_env(
        {
            "PLATFORM_AGENT_HOST": "0.0.0.0",
            "PLATFORM_AGENT_PORT": "9000",
            "PLATFORM_AGENT_DB": "/data/a.db",
            "PLATFORM_AGENT_BACKEND": "openai",
            "PLATFORM_AGENT_WORKSPACE": "/ws",
            "PLATFORM_AGENT_TOKEN": "tok-9f3a",
            "OPENAI_BASE_URL": "http://llm:8000/v1",
            "OPENAI_MODEL": "m",
            "OPENAI_API_KEY": "k",
        }
    )

    assert config.port == 9000
    assert config.db_path == Path("/data/a.db")
    assert config.openai_model == "m"
    assert "tok-9f3a" not in repr(config)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PLATFORM_AGENT_PORT": "eighty"}, "PLATFORM_AGENT_PORT"),
        ({"PLATFORM_AGENT_BACKEND": "gpt"}, "PLATFORM_AGENT_BACKEND"),
        ({"PLATFORM_AGENT_BACKEND": "openai"}, "OPENAI_MODEL"),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config_from_env(env)
