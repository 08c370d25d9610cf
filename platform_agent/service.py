"""The platform-agent's behaviour behind the HTTP layer: turns, sessions, snapshots.

Turns of one chat run one at a time (a lock per (agent_id, platform_chat_id)),
so memory stays in order and a repeated idempotency key waits for the first
attempt and then gets its recorded reply. A turn is recorded (memory and
ledger, one transaction) only when the backend finished without failing, and
before the final `done` line is sent: a client that saw `done` can rely on the
turn being remembered; a failed or broken-off turn leaves no trace and may be
sent again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import ParamSpec, TypeVar

import anyio
import structlog

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
    WIRE_VERSION,
    ContextRequest,
    DisconnectRequest,
    DisconnectResponse,
    HealthResponse,
    ListSnapshotsRequest,
    ListSnapshotsResponse,
    LoadSnapshotRequest,
    SaveSnapshotRequest,
    TurnRequest,
)
from platform_agent.backends import Backend, BackendEvent, split_deltas, user_content
from platform_agent.memory import AgentMemory, RecordedTurn

log = structlog.get_logger(__name__)

SERVICE_NAME = "platform-agent/1"

P = ParamSpec("P")
T = TypeVar("T")
ChatKey = tuple[str, str]


class SnapshotNotFound(Exception):
    """The owner has no snapshot with that id for this agent."""


@dataclass
class _ChatLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class AgentService:
    """One platform-agent: memory, a backend, live sessions."""

    def __init__(self, memory: AgentMemory, backend: Backend) -> None:
        self.memory = memory
        self.backend = backend
        self._locks: dict[ChatKey, _ChatLock] = {}
        self._live: set[ChatKey] = set()

    async def _db(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # Blocking SQLite calls go to a worker thread so a slow disk never stalls streams.
        return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))

    @asynccontextmanager
    async def _chat_turn(self, key: ChatKey) -> AsyncIterator[None]:
        entry = self._locks.setdefault(key, _ChatLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    # -- turns ---------------------------------------------------------------------------------

    async def turn(self, request: TurnRequest) -> AsyncGenerator[PlatformEvent, None]:
        """The events answering `request`, ending with TurnDone or TurnFailed."""
        key = (request.agent_id, request.platform_chat_id)
        bound = log.bind(
            agent_id=request.agent_id,
            platform_chat_id=request.platform_chat_id,
            idempotency_key=request.idempotency_key,
        )
        async with self._chat_turn(key):
            self._live.add(key)
            recorded = await self._db(self.memory.recorded_turn, *key, request.idempotency_key)
            if recorded is not None:
                bound.info("turn.replayed")
                for replayed in _replay(recorded):
                    yield replayed
                return
            history = await self._db(self.memory.history, *key)
            parts: list[str] = []
            files: list[EmittedFile] = []
            async with aclosing(self.backend.reply(history, request)) as events:
                while True:
                    event: BackendEvent
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        bound.exception("turn.backend_crashed")
                        event = TurnFailed(
                            code="agent_error", message=f"the agent failed ({type(exc).__name__})"
                        )
                    if isinstance(event, TurnFailed):
                        bound.warning("turn.failed", code=event.code)
                        yield event
                        return
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif isinstance(event, EmittedFile):
                        files.append(event)
                    yield event
            reply = "".join(parts)
            await self._db(
                self.memory.record_turn,
                *key,
                request.idempotency_key,
                sender=request.sender,
                user_content=user_content(request),
                reply=reply,
                files=tuple(files),
            )
            bound.info("turn.done", reply_chars=len(reply), files=len(files))
            yield TurnDone(text=reply)

    # -- other calls ---------------------------------------------------------------------------

    async def disconnect(self, request: DisconnectRequest) -> DisconnectResponse:
        key = (request.agent_id, request.platform_chat_id)
        live = key in self._live
        self._live.discard(key)
        log.info("chat.disconnected", agent_id=key[0], platform_chat_id=key[1], was_live=live)
        return DisconnectResponse(disconnected=live)

    async def save_snapshot(self, request: SaveSnapshotRequest) -> Snapshot:
        snapshot = await self._db(
            self.memory.save_snapshot,
            request.agent_id,
            request.platform_chat_id,
            owner=request.owner,
            name=request.name,
        )
        log.info("snapshot.saved", agent_id=request.agent_id, snapshot_id=snapshot.snapshot_id)
        return snapshot

    async def list_snapshots(self, request: ListSnapshotsRequest) -> ListSnapshotsResponse:
        snapshots = await self._db(
            self.memory.list_snapshots, request.agent_id, owner=request.owner
        )
        return ListSnapshotsResponse(snapshots=snapshots)

    async def load_snapshot(self, request: LoadSnapshotRequest) -> ContextInfo:
        """Replace the chat's memory; raises SnapshotNotFound."""
        key = (request.agent_id, request.platform_chat_id)
        async with self._chat_turn(key):
            loaded = await self._db(
                self.memory.load_snapshot,
                *key,
                owner=request.owner,
                snapshot_id=request.snapshot_id,
            )
        if not loaded:
            raise SnapshotNotFound(
                f"no snapshot {request.snapshot_id!r} of agent {request.agent_id!r} belongs to "
                "this owner; list them with /v1/snapshots/list"
            )
        log.info("snapshot.loaded", agent_id=key[0], platform_chat_id=key[1])
        return await self.context(ContextRequest(agent_id=key[0], platform_chat_id=key[1]))

    async def context(self, request: ContextRequest) -> ContextInfo:
        key = (request.agent_id, request.platform_chat_id)
        turns, snapshots = await self._db(self.memory.counts, *key)
        return ContextInfo(
            agent_id=request.agent_id,
            platform_chat_id=request.platform_chat_id,
            turns=turns,
            snapshots=snapshots,
            details={
                **self.backend.details(),
                "session": "live" if key in self._live else "idle",
            },
        )

    async def health(self) -> HealthResponse:
        try:
            ok = await self._db(self.memory.ping)
            detail = None
        except Exception as exc:
            ok, detail = False, f"memory database unusable ({type(exc).__name__})"
        return HealthResponse(
            ok=ok,
            wire_version=WIRE_VERSION,
            service=f"{SERVICE_NAME} ({self.backend.name})",
            detail=detail,
        )

    async def aclose(self) -> None:
        await self.backend.aclose()
        self.memory.close()


def _replay(recorded: RecordedTurn) -> list[PlatformEvent]:
    events: list[PlatformEvent] = [TextDelta(text=t) for t in split_deltas(recorded.reply)]
    events.extend(recorded.files)
    events.append(TurnDone(text=recorded.reply))
    return events
