"""What answers a turn: a deterministic echo, or an OpenAI-compatible endpoint.

A backend streams text deltas, emitted files and status updates, or ends with
one TurnFailed; the service adds the final TurnDone after recording the turn.

Echo test hooks (in the user's text):
    `!emit <name>`     write `agent-out/<name>` into the workspace and emit it
    `!slow <seconds>`  sleep before answering (timeout tests)
    `!stream <seconds> [<pieces>]`  pause this long between the reply's deltas, and send
                       it in about that many pieces (default 3; streaming tests)

A hook works anywhere in the text except at its start: through the bot, a message
starting with `!` is one of the bot's commands and never reaches the agent.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx
import structlog
from pydantic import SecretStr

from contracts.platform import EmittedFile, StatusUpdate, TextDelta, TurnFailed
from contracts.wire import TurnRequest
from platform_agent.memory import Message

log = structlog.get_logger(__name__)

BackendEvent = TextDelta | EmittedFile | StatusUpdate | TurnFailed

EMIT_DIR = "agent-out"
_EMIT = re.compile(r"!emit\s+(\S+)")
_SLOW = re.compile(r"!slow\s+(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"!stream\s+(\d+(?:\.\d+)?)(?:\s+(\d{1,4})\b)?")
DEFAULT_PIECES = 3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def user_content(request: TurnRequest) -> str:
    """The user's message as it goes into memory and to a model."""
    if not request.attachments:
        return request.text
    return f"{request.text}\n\n[attached files: {', '.join(request.attachments)}]"


def split_deltas(text: str, chunks: int = 3) -> list[str]:
    """`text` in about `chunks` pieces that concatenate back to it."""
    if not text:
        return []
    step = max(1, -(-len(text) // max(1, chunks)))
    return [text[i : i + step] for i in range(0, len(text), step)]


class Backend(Protocol):
    name: str

    def reply(
        self, history: Sequence[Message], request: TurnRequest
    ) -> AsyncGenerator[BackendEvent, None]:
        """Stream the answer to `request` given the chat's earlier messages."""
        ...

    def details(self) -> dict[str, str]: ...

    async def aclose(self) -> None: ...


class EchoBackend:
    """Answers `echo: <text>` (and lists attachments), streamed in a few deltas."""

    name = "echo"

    def __init__(self, workspace: Path, *, max_slow_seconds: float = 3600.0) -> None:
        self.workspace = workspace
        self.max_slow_seconds = max_slow_seconds

    def details(self) -> dict[str, str]:
        return {"backend": self.name}

    async def aclose(self) -> None:
        return None

    async def reply(
        self, history: Sequence[Message], request: TurnRequest
    ) -> AsyncGenerator[BackendEvent, None]:
        if slow := _SLOW.search(request.text):
            await anyio.sleep(min(float(slow.group(1)), self.max_slow_seconds))
        names = _EMIT.findall(request.text)
        for name in names:
            if not _SAFE_NAME.match(name):
                yield TurnFailed(
                    code="bad_request",
                    message=f"!emit name {name!r} must be letters, digits, '.', '_' or '-' "
                    "(at most 100, not starting with '.')",
                )
                return
        reply = f"echo: {request.text}"
        if request.attachments:
            reply += "\n\nattachments: " + ", ".join(request.attachments)
        stream = _STREAM.search(request.text)
        pause = min(float(stream.group(1)), self.max_slow_seconds) if stream else 0.0
        pieces = int(stream.group(2)) if stream and stream.group(2) else DEFAULT_PIECES
        for index, piece in enumerate(split_deltas(reply, max(1, pieces))):
            if index and pause:
                await anyio.sleep(pause)
            yield TextDelta(text=piece)
            await anyio.lowlevel.checkpoint()
        for name in names:
            yield await self._emit(name, request)

    async def _emit(self, name: str, request: TurnRequest) -> EmittedFile:
        relative = f"{EMIT_DIR}/{name}"
        target = anyio.Path(self.workspace) / EMIT_DIR / name
        await target.parent.mkdir(parents=True, exist_ok=True)
        root = await anyio.Path(self.workspace).resolve()
        if not (await target.parent.resolve()).is_relative_to(root):
            raise RuntimeError(f"{EMIT_DIR} escapes the workspace; refusing to write {relative}")
        await target.write_text(
            f"{name}: emitted by platform-agent for chat {request.platform_chat_id}\n",
            encoding="utf-8",
        )
        mimetype, _ = mimetypes.guess_type(name)
        return EmittedFile(path=relative, mimetype=mimetype)


class OpenAIBackend:
    """Forwards the chat to `{base_url}/chat/completions` with `stream: true` (SSE)."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: SecretStr | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.model = model
        self._base_url = base_url.rstrip("/") + "/"
        headers = {"Accept": "text/event-stream"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def details(self) -> dict[str, str]:
        return {"backend": self.name, "model": self.model}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def reply(
        self, history: Sequence[Message], request: TurnRequest
    ) -> AsyncGenerator[BackendEvent, None]:
        messages = [{"role": m.role, "content": m.content} for m in history]
        messages.append({"role": "user", "content": user_content(request)})
        body = {"model": self.model, "messages": messages, "stream": True}
        failure: TurnFailed | None = None
        try:
            async with self._client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    failure = TurnFailed(
                        code="upstream_error",
                        message=f"the model endpoint answered HTTP {response.status_code}: "
                        f"{detail}",
                    )
                else:
                    done = False
                    # Read to the end even after [DONE]: the endpoint closes right after,
                    # and a half-read httpx stream is never cleaned up.
                    async for data in sse_data(response.aiter_lines()):
                        if done or data.strip() == "[DONE]":
                            done = True
                            continue
                        for text in _delta_texts(data):
                            yield TextDelta(text=text)
        except httpx.TimeoutException:
            failure = TurnFailed(
                code="upstream_unavailable", message="the model endpoint did not answer in time"
            )
        except httpx.TransportError as exc:
            failure = TurnFailed(
                code="upstream_unavailable",
                message=f"cannot reach the model endpoint ({type(exc).__name__})",
            )
        except BadStream as exc:
            failure = TurnFailed(code="upstream_error", message=f"bad stream from the model: {exc}")
        if failure is not None:
            log.warning("openai.failed", code=failure.code, message=failure.message)
            yield failure


class BadStream(Exception):
    """The model endpoint's stream is not what the chat-completions API sends."""


def _delta_texts(data: str) -> list[str]:
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BadStream(f"a stream chunk is not JSON ({exc})") from exc
    texts: list[str] = []
    if not isinstance(chunk, dict):
        raise BadStream("a stream chunk is not a JSON object")
    if "error" in chunk:
        raise BadStream(f"error from the model: {chunk['error']}")
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str) and content:
            texts.append(content)
    return texts


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` payloads of a server-sent-event stream, multi-line data joined by newlines."""
    buffer: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer.clear()
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            buffer.append(value.removeprefix(" "))
    if buffer:
        yield "\n".join(buffer)
