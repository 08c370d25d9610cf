"""The HTTP face of the platform-agent: wire protocol v1 on Starlette.

Endpoints and bodies are those of contracts/wire.py; `GET /health` answers
like `GET /v1/health` for container health checks. Health needs no token;
everything else needs `Authorization: Bearer <PLATFORM_AGENT_TOKEN>` when a
token is configured. Errors are `ErrorResponse` bodies.

The app runs on anyio only, so it serves under asyncio (uvicorn) and under
trio (tests through httpx.ASGITransport) alike.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import TypeVar

import anyio
import httpx
import structlog
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from contracts.platform import PlatformEvent
from contracts.wire import (
    NDJSON_MEDIA_TYPE,
    WIRE_VERSION,
    WIRE_VERSION_HEADER,
    ContextRequest,
    DisconnectRequest,
    ErrorResponse,
    ListSnapshotsRequest,
    LoadSnapshotRequest,
    SaveSnapshotRequest,
    TurnRequest,
    encode_event,
)
from platform_agent.backends import Backend, EchoBackend, OpenAIBackend
from platform_agent.config import AgentServiceConfig
from platform_agent.memory import AgentMemory
from platform_agent.service import AgentService, SnapshotNotFound

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = 1024 * 1024
_VERSION_HEADERS = {WIRE_VERSION_HEADER: WIRE_VERSION}


class WireError(Exception):
    """Answer the request with `status` and an ErrorResponse."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = dict(_VERSION_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        ErrorResponse(code=code, message=message).model_dump(), status_code=status, headers=headers
    )


def _json(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), headers=_VERSION_HEADERS)


class EventStream(StreamingResponse):
    """An NDJSON turn stream that always closes its event generator.

    Starlette's StreamingResponse leaves the generator suspended when the
    client goes away; ours is closed (releasing the chat's turn lock) as soon
    as the client disconnects or the stream ends.
    """

    def __init__(self, events: AsyncGenerator[PlatformEvent, None]) -> None:
        super().__init__(_never(), media_type=NDJSON_MEDIA_TYPE, headers=_VERSION_HEADERS)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def cancel_on_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_on_disconnect)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with aclosing(self._events) as events:
                async for event in events:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": encode_event(event),
                            "more_body": True,
                        }
                    )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()


async def _never() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


def build_backend(
    config: AgentServiceConfig, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> Backend:
    if config.backend == "openai":
        assert config.openai_model is not None  # the config validator guarantees it
        return OpenAIBackend(
            base_url=config.openai_base_url,
            model=config.openai_model,
            api_key=config.openai_api_key,
            transport=upstream_transport,
        )
    return EchoBackend(config.workspace, max_slow_seconds=config.max_slow_seconds)


def create_app(
    config: AgentServiceConfig, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """The platform-agent application; opens (and migrates) the memory database now.

    `upstream_transport` replaces the network for the openai backend (tests).
    The database and HTTP client close in the app's lifespan shutdown; without
    a server running the lifespan, call `await app.state.service.aclose()`.
    """
    service = AgentService(
        AgentMemory(config.db_path), build_backend(config, upstream_transport=upstream_transport)
    )
    token = config.token.get_secret_value().encode() if config.token is not None else None

    def check(request: Request, *, auth: bool = True) -> None:
        version = request.headers.get(WIRE_VERSION_HEADER, WIRE_VERSION)
        if version != WIRE_VERSION:
            raise WireError(
                400,
                "unsupported_version",
                f"this platform-agent speaks wire v{WIRE_VERSION}, the request is v{version}",
            )
        if auth and token is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, b"Bearer " + token):
                raise WireError(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token; send the token this platform-agent was "
                    "started with (PLATFORM_AGENT_TOKEN)",
                )

    async def parse(request: Request, model: type[M]) -> M:
        check(request)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise WireError(413, "bad_request", f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                for err in exc.errors()
            )
            raise WireError(400, "bad_request", f"invalid {model.__name__}: {problems}") from exc

    async def turns(request: Request) -> Response:
        return EventStream(service.turn(await parse(request, TurnRequest)))

    async def disconnect(request: Request) -> Response:
        return _json(await service.disconnect(await parse(request, DisconnectRequest)))

    async def save_snapshot(request: Request) -> Response:
        return _json(await service.save_snapshot(await parse(request, SaveSnapshotRequest)))

    async def list_snapshots(request: Request) -> Response:
        return _json(await service.list_snapshots(await parse(request, ListSnapshotsRequest)))

    async def load_snapshot(request: Request) -> Response:
        body = await parse(request, LoadSnapshotRequest)
        try:
            return _json(await service.load_snapshot(body))
        except SnapshotNotFound as exc:
            raise WireError(404, "snapshot_not_found", str(exc)) from exc

    async def context(request: Request) -> Response:
        return _json(await service.context(await parse(request, ContextRequest)))

    async def health(request: Request) -> Response:
        check(request, auth=False)
        answer = await service.health()
        return JSONResponse(
            answer.model_dump(), status_code=200 if answer.ok else 503, headers=_VERSION_HEADERS
        )

    async def on_wire_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WireError)
        log.info("request.refused", path=request.url.path, code=exc.code, status=exc.status)
        return _error(exc.status, exc.code, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "bad_request"
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("platform_agent.ready", backend=service.backend.name)
        try:
            yield
        finally:
            with anyio.move_on_after(10, shield=True):
                await service.aclose()

    def post(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
        return Route(path, endpoint, methods=["POST"])

    app = Starlette(
        routes=[
            post("/v1/turns", turns),
            post("/v1/chats/disconnect", disconnect),
            post("/v1/snapshots/save", save_snapshot),
            post("/v1/snapshots/list", list_snapshots),
            post("/v1/snapshots/load", load_snapshot),
            post("/v1/context", context),
            Route("/v1/health", health, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={WireError: on_wire_error, HTTPException: on_http_error},
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.service = service
    return app
