"""The platform connection pool: live agent sessions keyed by (agent_id, platform_chat_id).

A session opens with the chat's first turn and closes (inner.disconnect) when
it is evicted: the least recently used idle one when the pool is full, any
that stayed idle for `idle_timeout` (swept by `run`), or explicitly through
`disconnect()` on `!clear` and agent switch. A session with a turn in flight
is never evicted; the pool then grows past `max_sessions` until turns end.

Nothing is retried here: the platform adapter below owns the platform's
retries (for HTTP agents runtime/platforms/http.py resends a turn that failed
before its first event, with the same idempotency key; see tasks/retry.py), so
a dead agent is asked on one schedule, not on two. A turn's error is counted
and raised to the caller. Eviction disconnects are best effort: a failure is
counted and logged, never raised into a turn.

Sessions are not durable: after a restart the pool starts empty.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio
import structlog
from anyio.abc import TaskStatus

from contracts.platform import (
    PlatformClient,
    PlatformError,
    PlatformEvent,
    UserTurn,
)
from tasks.forwarding import ForwardingPlatform

log = structlog.get_logger(__name__)

SessionKey = tuple[str, str]  # (agent_id, platform_chat_id)


@dataclass(frozen=True)
class PoolStatistics:
    """Counters for /metrics; all but `size` only grow."""

    size: int
    hits: int
    misses: int
    evictions: int
    errors: int


@dataclass
class _Session:
    last_used: float
    active: int = 0


@runtime_checkable
class _Closeable(Protocol):
    async def aclose(self) -> None: ...


class PlatformPool(ForwardingPlatform):
    """A PlatformClient that keeps per-chat sessions on top of another one."""

    def __init__(
        self,
        inner: PlatformClient,
        *,
        max_sessions: int = 256,
        idle_timeout: float = 900.0,
        sweep_interval: float | None = None,
        disconnect_timeout: float = 10.0,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        super().__init__(inner)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.sweep_interval = (
            sweep_interval if sweep_interval is not None else min(60.0, idle_timeout / 4)
        )
        self.disconnect_timeout = disconnect_timeout
        self._clock = clock
        self._sessions: OrderedDict[SessionKey, _Session] = OrderedDict()  # LRU first
        self._hits = self._misses = self._evictions = self._errors = 0

    # -- introspection -------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            size=len(self._sessions),
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            errors=self._errors,
        )

    def live_sessions(self) -> list[SessionKey]:
        """Open sessions, least recently used first."""
        return list(self._sessions)

    # -- the supervised task -------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Evict idle sessions every `sweep_interval` until cancelled, then close them all."""
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.sweep_interval)
                await self.evict_idle()
        finally:
            with anyio.move_on_after(self.disconnect_timeout, shield=True):
                await self.close_all()

    async def evict_idle(self) -> int:
        """Close every session idle for at least `idle_timeout`; returns how many."""
        now = self._clock()
        idle = [
            key
            for key, s in self._sessions.items()
            if s.active == 0 and now - s.last_used >= self.idle_timeout
        ]
        for key in idle:
            del self._sessions[key]
        for key in idle:
            await self._evict(key, reason="idle")
        return len(idle)

    async def close_all(self) -> None:
        """Disconnect every idle session (shutdown); sessions in a turn are left to it."""
        keys = [key for key, s in self._sessions.items() if s.active == 0]
        for key in keys:
            del self._sessions[key]
        for key in keys:
            await self._disconnect_quietly(key)

    # -- sessions ------------------------------------------------------------------------------

    def _check_out(self, key: SessionKey) -> tuple[_Session, list[SessionKey]]:
        """Mark the session busy (opening it if needed); returns it and the keys to evict."""
        session = self._sessions.get(key)
        if session is None:
            self._misses += 1
            session = self._sessions[key] = _Session(last_used=self._clock())
        else:
            self._hits += 1
            self._sessions.move_to_end(key)
        session.active += 1
        evict: list[SessionKey] = []
        excess = len(self._sessions) - self.max_sessions
        if excess > 0:
            for other, s in self._sessions.items():
                if len(evict) == excess:
                    break
                if s.active == 0:
                    evict.append(other)
            for other in evict:
                del self._sessions[other]
            if len(evict) < excess:
                log.warning("platform_pool.over_capacity", size=len(self._sessions))
        return session, evict

    def _check_in(self, key: SessionKey, session: _Session) -> None:
        session.active -= 1
        session.last_used = self._clock()

    async def _evict(self, key: SessionKey, *, reason: str) -> None:
        self._evictions += 1
        log.info("platform_pool.evicted", agent_id=key[0], platform_chat_id=key[1], reason=reason)
        await self._disconnect_quietly(key)

    async def _disconnect_quietly(self, key: SessionKey) -> None:
        try:
            with anyio.fail_after(self.disconnect_timeout):
                await self._inner.disconnect(*key)
        except (PlatformError, TimeoutError) as exc:
            self._errors += 1
            log.warning(
                "platform_pool.disconnect_failed",
                agent_id=key[0],
                platform_chat_id=key[1],
                error=type(exc).__name__,
            )

    # -- PlatformClient ------------------------------------------------------------------------

    async def send_turn(self, turn: UserTurn) -> AsyncGenerator[PlatformEvent, None]:
        """The inner platform's events for `turn`, in the chat's session."""
        key = (turn.agent_id, turn.platform_chat_id)
        session, evict = self._check_out(key)
        try:
            for other in evict:
                await self._evict(other, reason="capacity")
            events = self._inner.send_turn(turn)
            try:
                async for event in events:
                    yield event
            except PlatformError:
                self._errors += 1
                raise
            finally:
                if isinstance(events, _Closeable):
                    with anyio.move_on_after(self.disconnect_timeout, shield=True):
                        await events.aclose()
        finally:
            self._check_in(key, session)

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        """Close the chat's session and tell the platform, even if the pool had none open.

        For `!clear` and agent switch. Raises the platform's error: the caller
        decides whether a failed disconnect matters.
        """
        self._sessions.pop((agent_id, platform_chat_id), None)
        await self._inner.disconnect(agent_id, platform_chat_id)
