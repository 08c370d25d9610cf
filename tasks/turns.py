"""One agent turn shown in Matrix: typing, then one message edited at a bounded rate.

Typing is shown only when the agent has not answered within `typing_delay`: a
quick answer needs no "is typing", and each typing change is a request plus a
wake-up of every client syncing the room (the bot's own sync too), on the path
of the answer. A turn that turned typing on turns it off when it ends.

Events from the platform are read by a producer task into a memory stream so
the consumer can wait for "next event or next flush time" without cancelling
the platform's iterator midway. The producer closes the platform's stream
(`aclose`) however it ends, so a turn abandoned halfway releases its HTTP
response at once rather than when the garbage collector finds it.

A platform failure (PlatformError from the adapter or the pool, or a TurnFailed
event) is shown as a short message in the room (its code and a reference; the
detail goes to the log, see tasks/failures.py) and counted as `platform_error` in
the metrics, labelled with its code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from dataclasses import dataclass, field

import anyio
import structlog

from contracts.matrix import MatrixPort
from contracts.metrics import Metrics, NullMetrics
from contracts.platform import (
    EmittedFile,
    PlatformClient,
    PlatformError,
    PlatformEvent,
    StatusUpdate,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from tasks.catalogue import Catalogue
from tasks.failures import platform_error_text, turn_failed_text
from tasks.replies import Replier

log = structlog.get_logger(__name__)

# (room_id, triggering event id, the file, its 1-based index in the turn)
FileHandler = Callable[[str, str, EmittedFile, int], Awaitable[None]]


@dataclass
class TurnOutcome:
    text: str = ""
    message_event_id: str | None = None
    files: list[str] = field(default_factory=list)
    error: str | None = None
    edits: int = 0


@dataclass
class _TypingState:
    on: bool = False  # typing was (or may have been) turned on in this turn


class TurnStreamer:
    """Runs a user turn against the platform and shows the answer in the room."""

    def __init__(
        self,
        matrix: MatrixPort,
        platform: PlatformClient,
        catalogue: Catalogue,
        *,
        edit_interval: float = 1.0,
        typing_delay: float = 0.3,
        on_file: FileHandler | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._matrix = matrix
        self._platform = platform
        self._replier = Replier(matrix)
        self._t = catalogue
        self._edit_interval = edit_interval
        self._typing_delay = typing_delay
        self._on_file = on_file
        self._metrics = metrics or NullMetrics()

    async def run(self, room_id: str, turn: UserTurn) -> TurnOutcome:
        """Stream one turn; platform failures become a clear message in the room."""
        trigger = turn.idempotency_key
        outcome = TurnOutcome()
        sent_text = ""
        typing = _TypingState()
        send, receive = anyio.create_memory_object_stream[PlatformEvent | PlatformError](16)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, turn, send)
                tg.start_soon(self._type_after_delay, room_id, typing)
                next_flush = anyio.current_time() + self._edit_interval
                async with receive:
                    while True:
                        item: PlatformEvent | PlatformError | None = None
                        with anyio.move_on_after(max(0.0, next_flush - anyio.current_time())):
                            try:
                                item = await receive.receive()
                            except anyio.EndOfStream:
                                break
                        if item is None:  # flush time: show progress
                            if outcome.text and outcome.text != sent_text:
                                sent_text = await self._show(room_id, trigger, outcome, final=False)
                            next_flush = anyio.current_time() + self._edit_interval
                            continue
                        if isinstance(item, PlatformError):
                            outcome.error = str(item) or item.code
                            self._metrics.platform_error(item.code)
                            await self._replier.say(
                                room_id,
                                platform_error_text(
                                    self._t, item, trigger=trigger, room_id=room_id
                                ),
                                reply_to=trigger,
                                purpose="error",
                            )
                            break
                        if isinstance(item, TextDelta):
                            outcome.text += item.text
                        elif isinstance(item, TurnDone):
                            if item.text is not None and not outcome.text:
                                outcome.text = item.text
                            break
                        elif isinstance(item, TurnFailed):
                            outcome.error = item.code
                            self._metrics.platform_error(item.code)
                            await self._replier.say(
                                room_id,
                                turn_failed_text(self._t, item, trigger=trigger, room_id=room_id),
                                reply_to=trigger,
                                purpose="error",
                            )
                            break
                        elif isinstance(item, EmittedFile):
                            outcome.files.append(item.path)
                            if self._on_file is not None:
                                await self._on_file(room_id, trigger, item, len(outcome.files))
                        elif isinstance(item, StatusUpdate):
                            typing.on = True
                            await self._typing(room_id, True)
                tg.cancel_scope.cancel()
            if outcome.text and outcome.text != sent_text:
                await self._show(room_id, trigger, outcome, final=True)
        finally:
            if typing.on:
                with anyio.move_on_after(2, shield=True):
                    await self._typing(room_id, False)
        return outcome

    async def _type_after_delay(self, room_id: str, typing: _TypingState) -> None:
        await anyio.sleep(self._typing_delay)
        typing.on = True  # before the request: a cancelled request may still land
        await self._typing(room_id, True)

    async def _produce(
        self,
        turn: UserTurn,
        send: anyio.abc.ObjectSendStream[PlatformEvent | PlatformError],
    ) -> None:
        async with send:
            try:
                async with _closing(self._platform.send_turn(turn)) as events:
                    async for event in events:
                        await send.send(event)
            except PlatformError as exc:
                await send.send(exc)

    async def _show(self, room_id: str, trigger: str, outcome: TurnOutcome, *, final: bool) -> str:
        if outcome.message_event_id is None:
            outcome.message_event_id = await self._replier.say(
                room_id, outcome.text, reply_to=trigger, purpose="answer", notice=False
            )
        else:
            outcome.edits += 1
            purpose = "answer-final" if final else f"answer-edit-{outcome.edits}"
            await self._replier.edit(
                room_id, outcome.message_event_id, outcome.text, reply_to=trigger, purpose=purpose
            )
        return outcome.text

    async def _typing(self, room_id: str, on: bool) -> None:
        try:
            await self._matrix.set_typing(room_id, on, timeout_ms=30000)
        except Exception as exc:  # typing is cosmetic: never fail a turn for it
            log.debug("typing.failed", room_id=room_id, error=repr(exc))


def _closing(
    events: AsyncIterator[PlatformEvent],
) -> AbstractAsyncContextManager[AsyncIterator[PlatformEvent]]:
    """`aclosing(events)` when the stream can be closed (every async generator can)."""
    if isinstance(events, AsyncGenerator):
        return aclosing(events)
    return nullcontext(events)
