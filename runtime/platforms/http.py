"""HTTP adapter: contracts.platform.PlatformClient over wire protocol v1 (contracts/wire.py).

Errors are mapped onto the contracts.platform tree (their messages are for logs:
the agent's url and the server's words appear with credentials masked, see
tasks/redact.py; users see only the code, see tasks/failures.py):

    cannot connect, connection lost, 5xx, 429  -> PlatformUnavailable
    no byte within the agent's timeout_seconds -> PlatformTimeout
    any other 4xx                              -> PlatformRejected (with the server's reason)
    a line of the stream that is not an event  -> PlatformUnavailable (the platform is broken)

This adapter is the one layer that retries platform calls (tasks/retry.py;
the connection pool above it does not), so a dead agent gets at most
`RetryPolicy.attempts` requests per call, on one schedule. What is retried:
- a turn, only while no event has arrived yet: the idempotency key makes the
  platform answer a resend with the recorded reply, never twice; once an
  event was yielded a resend could duplicate output, so the error propagates;
- disconnect, list snapshots, load snapshot, context: idempotent;
- never a snapshot save (a resend may create a second snapshot), never a read
  timeout (the agent is busy, not down; a resend would wait again), never a 4xx.
Health is one attempt: a probe reports what it sees.

The read timeout applies between bytes, so a platform that keeps streaming
(status lines) is not cut off; one that goes quiet for timeout_seconds is.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Final, TypeVar

import anyio
import httpx
import structlog
from pydantic import BaseModel, ValidationError

from contracts.platform import (
    ContextInfo,
    PlatformError,
    PlatformEvent,
    PlatformHealth,
    PlatformRejected,
    PlatformTimeout,
    PlatformUnavailable,
    Snapshot,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from contracts.registry import AgentEntry
from contracts.wire import (
    NDJSON_MEDIA_TYPE,
    WIRE_VERSION,
    WIRE_VERSION_HEADER,
    ContextRequest,
    DisconnectRequest,
    DisconnectResponse,
    ErrorResponse,
    HealthResponse,
    ListSnapshotsRequest,
    ListSnapshotsResponse,
    LoadSnapshotRequest,
    SaveSnapshotRequest,
    TurnRequest,
    decode_event,
)
from tasks.redact import redact, redact_url
from tasks.retry import Backoff, retry

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DRAIN_TIMEOUT: Final = 5.0  # reading what follows a terminal or broken line, at most


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` requests per call in all, `backoff` between them."""

    attempts: int = 3
    backoff: Backoff = field(
        default_factory=lambda: Backoff(initial=0.25, factor=2.0, max=4.0, jitter=0.25)
    )

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")


@dataclass(frozen=True)
class _OpenTurn:
    """A turn's response, open, with its first event already read."""

    response: httpx.Response
    lines: AsyncIterator[str]
    first: PlatformEvent


class _Retryable(Exception):
    """Internal: the attempt failed in a way that is safe to retry; carries the final error."""

    def __init__(self, error: PlatformError) -> None:
        super().__init__(str(error))
        self.error = error


class HttpPlatform:
    """One HTTP agent of the registry, spoken to with wire protocol v1.

    The bearer token is read once, from the environment variable the entry
    names in `auth_token_env`; it is sent, never logged. `transport` replaces
    the network (tests pass `httpx.ASGITransport(app)` or a MockTransport).
    Call `aclose()` when done.
    """

    def __init__(
        self,
        agent: AgentEntry,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if agent.url is None:
            raise ValueError(f"agent {agent.id!r} has no url; only http agents use HttpPlatform")
        self.agent = agent
        self.retry = retry or RetryPolicy()
        headers = {WIRE_VERSION_HEADER: WIRE_VERSION}
        self._token_env = agent.auth_token_env
        if agent.auth_token_env is not None:
            token = (os.environ if env is None else env).get(agent.auth_token_env, "")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            else:
                log.warning(
                    "platform.http.token_missing", agent_id=agent.id, env_var=agent.auth_token_env
                )
        self._client = httpx.AsyncClient(
            base_url=agent.url.rstrip("/") + "/",
            headers=headers,
            transport=transport,
            # No cap on connections: SURFACE_ROOM_CONCURRENCY bounds the turns in flight,
            # and httpx's default cap (100) would make the 101st turn fail with a
            # PoolTimeout instead of waiting for the agent.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=agent.timeout_seconds,
                write=agent.timeout_seconds,
                pool=connect_timeout,
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpPlatform:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- error mapping -------------------------------------------------------------------------

    def _where(self) -> str:
        # The url may carry credentials (userinfo, a token in the query): never in a message.
        return f"agent {self.agent.id!r} at {redact_url(self.agent.url or '')}"

    def _transport_error(self, exc: httpx.HTTPError, path: str) -> PlatformError:
        if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
            return PlatformTimeout(
                f"{self._where()} did not answer within {self.agent.timeout_seconds:g} s "
                f"({path}); it may be overloaded, or raise timeout_seconds in the registry"
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return PlatformUnavailable(
                f"{self._where()} is unreachable ({_reason(exc)}); is the platform running?"
            )
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return PlatformUnavailable(f"{self._where()}: bad url ({exc}); fix it in the registry")
        return PlatformUnavailable(f"{self._where()}: connection failed ({_reason(exc)})")

    def _status_error(self, response: httpx.Response, body: bytes) -> PlatformError:
        status = response.status_code
        try:
            error = ErrorResponse.model_validate_json(body)
            reason = f"{error.message} ({error.code})"
        except ValidationError:
            reason = redact(body.decode(errors="replace").strip()[:300]) or response.reason_phrase
        if status >= 500 or status == 429:
            return PlatformUnavailable(f"{self._where()} is in trouble: HTTP {status}: {reason}")
        if status == 401 and self._token_env is not None:
            reason += f"; check the token in {self._token_env}"
        elif status == 401:
            reason += "; the platform wants a token: set auth_token_env in the registry"
        return PlatformRejected(f"{self._where()} refused the request: HTTP {status}: {reason}")

    # -- plumbing ------------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]], path: str, *, attempts: int) -> T:
        """`call()` with this adapter's retries; a `_Retryable` comes out as its error."""
        try:
            return await retry(
                call,
                self.retry.backoff,
                retry_on=_Retryable,
                attempts=attempts,
                operation="platform.http",
                log_fields={"agent_id": self.agent.id, "path": path},
            )
        except _Retryable as exc:
            raise exc.error from exc.__cause__

    @staticmethod
    def _retryable(error: PlatformError) -> PlatformError | _Retryable:
        # Only "the platform is down" is worth another try; timeouts and 4xx are not.
        return _Retryable(error) if isinstance(error, PlatformUnavailable) else error

    async def _call(self, path: str, body: BaseModel | None, answer: type[R], *, retry: bool) -> R:
        attempts = self.retry.attempts if retry else 1
        return await self._retrying(
            partial(self._call_once, path, body, answer), path, attempts=attempts
        )

    async def _call_once(self, path: str, body: BaseModel | None, answer: type[R]) -> R:
        try:
            if body is None:
                response = await self._client.get(path)
            else:
                response = await self._client.post(
                    path,
                    content=body.model_dump_json(),
                    headers={"Content-Type": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise self._retryable(self._transport_error(exc, path)) from exc
        if response.status_code >= 400:
            raise self._retryable(self._status_error(response, response.content))
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise PlatformUnavailable(
                f"{self._where()} answered {path} with something that is not a "
                f"{answer.__name__} (wire v{WIRE_VERSION}): {_first_error(exc)}"
            ) from exc

    # -- PlatformClient ------------------------------------------------------------------------

    async def send_turn(self, turn: UserTurn) -> AsyncGenerator[PlatformEvent, None]:
        """Stream one turn; see the module docstring for what is retried."""
        path = "v1/turns"
        body = TurnRequest.from_turn(turn).to_json()
        # Only the part before the first event is retried: after it, a resend
        # could show the user output twice.
        opened = await self._retrying(
            partial(self._open_turn, path, body), path, attempts=self.retry.attempts
        )
        lines = opened.lines
        try:
            event: PlatformEvent | None = opened.first
            while event is not None:
                if isinstance(event, TurnDone | TurnFailed):
                    # Read to the end first: the platform closes right after the
                    # terminal line, and a half-read httpx stream is never cleaned up.
                    await _drain(lines)
                    yield event
                    return
                yield event
                event = await self._next_event(lines)
            raise PlatformUnavailable(
                f"{self._where()} ended the turn stream without a done or error line"
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, path) from exc
        finally:
            with anyio.move_on_after(DRAIN_TIMEOUT, shield=True):
                await opened.response.aclose()

    async def _open_turn(self, path: str, body: str) -> _OpenTurn:
        """POST the turn and read up to its first event.

        Raises `_Retryable` when a resend may help; closes the response on any error.
        """
        headers = {"Content-Type": "application/json", "Accept": NDJSON_MEDIA_TYPE}
        request = self._client.build_request("POST", path, content=body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._retryable(self._transport_error(exc, path)) from exc
        try:
            if response.status_code >= 400:
                raise self._retryable(self._status_error(response, await response.aread()))
            lines = response.aiter_lines()
            first = await self._next_event(lines)
            if first is None:
                raise _Retryable(
                    PlatformUnavailable(
                        f"{self._where()} ended the turn stream without a done or error line"
                    )
                )
        except httpx.HTTPError as exc:
            with anyio.move_on_after(DRAIN_TIMEOUT, shield=True):
                await response.aclose()
            raise self._retryable(self._transport_error(exc, path)) from exc
        except BaseException:
            with anyio.move_on_after(DRAIN_TIMEOUT, shield=True):
                await response.aclose()
            raise
        return _OpenTurn(response, lines, first)

    async def _next_event(self, lines: AsyncIterator[str]) -> PlatformEvent | None:
        """The stream's next event, skipping blank lines; None at its end."""
        async for line in lines:
            if line.strip():
                return await self._decode(line, lines)
        return None

    async def _decode(self, line: str, rest: AsyncIterator[str]) -> PlatformEvent:
        try:
            return decode_event(line)
        except ValidationError as exc:
            await _drain(rest)
            raise PlatformUnavailable(
                f"{self._where()} sent a line that is not a wire v{WIRE_VERSION} event: "
                f"{_first_error(exc)}"
            ) from exc

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        request = DisconnectRequest(agent_id=agent_id, platform_chat_id=platform_chat_id)
        await self._call("v1/chats/disconnect", request, DisconnectResponse, retry=True)

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        request = SaveSnapshotRequest(
            agent_id=agent_id, platform_chat_id=platform_chat_id, owner=owner, name=name
        )
        return await self._call("v1/snapshots/save", request, Snapshot, retry=False)

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        request = ListSnapshotsRequest(agent_id=agent_id, owner=owner)
        answer = await self._call("v1/snapshots/list", request, ListSnapshotsResponse, retry=True)
        return answer.snapshots

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        request = LoadSnapshotRequest(
            agent_id=agent_id,
            platform_chat_id=platform_chat_id,
            owner=owner,
            snapshot_id=snapshot_id,
        )
        return await self._call("v1/snapshots/load", request, ContextInfo, retry=True)

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        request = ContextRequest(agent_id=agent_id, platform_chat_id=platform_chat_id)
        return await self._call("v1/context", request, ContextInfo, retry=True)

    async def health(self) -> PlatformHealth:
        """One probe. Raises PlatformError when the platform cannot be asked at all.

        A platform that answers but reports itself unwell, or speaks another
        wire version, gives `ok=False` with the reason in `detail`.
        """
        path = "v1/health"
        try:
            response = await self._client.get(path)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, path) from exc
        try:
            answer = HealthResponse.model_validate_json(response.content)
        except ValidationError:
            if response.status_code >= 400:
                raise self._status_error(response, response.content) from None
            raise PlatformUnavailable(
                f"{self._where()} answered {path} with something that is not a HealthResponse; "
                "is the url pointing at a platform-agent?"
            ) from None
        if answer.wire_version != WIRE_VERSION:
            return PlatformHealth(
                ok=False,
                version=answer.service,
                detail=f"speaks wire v{answer.wire_version}; this bot speaks v{WIRE_VERSION}",
            )
        return PlatformHealth(ok=answer.ok, version=answer.service, detail=answer.detail)


async def _drain(lines: AsyncIterator[str]) -> None:
    with anyio.move_on_after(DRAIN_TIMEOUT):
        async for _ in lines:
            pass


def _reason(exc: httpx.HTTPError) -> str:
    text = redact(str(exc).strip())
    return text[:200] if text else type(exc).__name__


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
