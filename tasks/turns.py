"""One agent turn shown in Matrix: typing, then one message edited at a bounded rate.

When the answer is shown (tasks/answer_pacing.py): the first message is held back
until it has a substantial start, since it is all a notification ever shows; later
progress is shown by edits, within an edit budget whose interval grows.

An answer too large for one event continues in further messages (each part's event sized
in bytes: tasks/answer_state.py, tasks/answer_parts.py): a part shown by editing moves
on to a new message before an edit would outgrow the limit. Every part has its own
transaction ids, derived from the trigger and the part's number, so a replayed turn
sends nothing twice. A part's first message, once sent, is remembered until the turn is
done (`SentMessages`, the store), and so is a part's final text having gone out: a
replayed turn edits that message instead of sending it again (a resent transaction id
only returns the old event, with whatever partial text it had then), and leaves a
finished part alone (a new progress edit would show less than its final text).

Homeserver trouble never loses the answer: a part's first message and its final text are
sent until they go through (tasks/answer_sends.py); a progress edit that fails is
skipped (a 429 also delays the next one). An event refused as too large is cut smaller;
refused at every size, the room is told how much was not shown. Refusals that retrying
cannot help (M_FORBIDDEN, ...) reach the caller as themselves, never wrapped in an
ExceptionGroup.

Typing is shown only when the agent has not answered within `typing_delay`: a
quick answer needs no "is typing", and each typing change is a request plus a
wake-up of every client syncing the room (the bot's own sync too), on the path
of the answer. A turn that turned typing on turns it off when it ends. With
`signals` (tasks/room_signals.py, as the runtime wires it) the turn only notes
what it wants and a background task sends it, so no typing request holds the
turn, and an "on" still unsent when the turn ends cancels out with its "off".

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

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from contracts.matrix import (
    MatrixError,
    MatrixPort,
    MatrixRateLimited,
)
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
from tasks.answer_pacing import (
    FIRST_MESSAGE_CHARS,
    FIRST_MESSAGE_WAIT,
    MAX_EDITS,
    holds_first_message,
    may_edit,
    progress_interval,
)
from tasks.answer_parts import first_part
from tasks.answer_sends import EventTooLarge, refusal_as_too_large, send_patiently
from tasks.answer_state import (
    AnswerState,
    TurnOutcome,
    event_budget,
    fits_edit,
    fits_message,
    message_sent,
)
from tasks.catalogue import Catalogue
from tasks.failures import platform_error_text, turn_failed_text
from tasks.replies import (
    MAX_EVENT_BYTES,
    Replier,
    txn_id_for,
)
from tasks.room_signals import RoomSignals

log = structlog.get_logger(__name__)

# (room_id, triggering event id, the file, its 1-based index in the turn)
FileHandler = Callable[[str, str, EmittedFile, int], Awaitable[None]]


class SentMessages(Protocol):
    """A pending turn's answer messages, by transaction id (the store keeps them)."""

    def sent_message(self, txn_id: str) -> str | None: ...
    def remember_sent_message(self, txn_id: str, trigger_event_id: str, event_id: str) -> None: ...


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
        first_message_chars: int = FIRST_MESSAGE_CHARS,
        first_message_wait: float = FIRST_MESSAGE_WAIT,
        max_edits: int = MAX_EDITS,
        typing_delay: float = 0.3,
        max_event_bytes: int = MAX_EVENT_BYTES,
        on_file: FileHandler | None = None,
        metrics: Metrics | None = None,
        sent: SentMessages | None = None,
        signals: RoomSignals | None = None,
    ) -> None:
        self._matrix = matrix
        self._platform = platform
        self._replier = Replier(matrix)
        self._t = catalogue
        if max_edits < 1:
            raise ValueError("max_edits must be at least 1 (the final edit)")
        self._edit_interval = edit_interval
        self._first_chars = first_message_chars
        self._first_wait = first_message_wait
        self._max_edits = max_edits
        self._typing_delay = typing_delay
        self._max_event_bytes = max_event_bytes
        self._on_file = on_file
        self._metrics = metrics or NullMetrics()
        self._sent = sent
        self._signals = signals

    async def run(self, room_id: str, turn: UserTurn, *, replace: str | None = None) -> TurnOutcome:
        """Stream one turn; platform failures become a clear message in the room.

        `replace`: show the answer by editing this earlier message of the bot (an
        edited question's new answer) instead of sending a new one.
        Returns once the whole answer is in the room. Raises MatrixError (unwrapped,
        never an ExceptionGroup) when the homeserver refuses for good (M_FORBIDDEN, ...).
        """
        outcome = TurnOutcome()
        answer = AnswerState(
            turn.idempotency_key,
            budget=await self._event_budget(room_id),
            thread=turn.thread_id,
            event_id=replace,
            hold_until=anyio.current_time() + self._first_wait,
        )
        if replace is not None:
            message_sent(answer, outcome, replace)
            if self._sent is not None:  # a replay: an earlier run may have finished the edit
                finished = self._sent.sent_message(txn_id_for(answer.trigger, "answer-final"))
                answer.finished = finished is not None
        typing = _TypingState()
        send, receive = anyio.create_memory_object_stream[PlatformEvent | PlatformError](16)
        try:
            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, turn, send)
                tg.start_soon(self._type_after_delay, room_id, typing)
                try:
                    notice = await self._consume(room_id, receive, outcome, answer, typing)
                except Exception as exc:  # raised below as it is, not inside an ExceptionGroup
                    failure = exc
                tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
            await self._flush(room_id, answer, outcome, final=True)
            thread = answer.thread
            if notice is not None:
                await send_patiently(
                    lambda: self._replier.say(
                        room_id, notice, reply_to=answer.trigger, purpose="error", thread=thread
                    ),
                    what="error",
                )
        finally:
            if typing.on:
                if self._signals is not None:
                    self._signals.typing(room_id, False)
                else:
                    with anyio.move_on_after(2, shield=True):
                        await self._typing(room_id, False)
        return outcome

    async def _consume(
        self,
        room_id: str,
        receive: anyio.abc.ObjectReceiveStream[PlatformEvent | PlatformError],
        outcome: TurnOutcome,
        answer: AnswerState,
        typing: _TypingState,
    ) -> str | None:
        """Read the platform's events, showing progress; returns the error notice to say."""
        next_flush = anyio.current_time() + self._edit_interval
        async with receive:
            while True:
                item: PlatformEvent | PlatformError | None = None
                with anyio.move_on_after(max(0.0, next_flush - anyio.current_time())):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        return None
                if item is None:  # flush time: show progress
                    wait = await self._flush(room_id, answer, outcome, final=False)
                    interval = progress_interval(self._edit_interval, answer.edits, self._max_edits)
                    next_flush = anyio.current_time() + max(interval, wait)
                    continue
                if isinstance(item, PlatformError):
                    outcome.error = str(item) or item.code
                    self._metrics.platform_error(item.code)
                    return platform_error_text(
                        self._t, item, trigger=answer.trigger, room_id=room_id
                    )
                if isinstance(item, TextDelta):
                    outcome.text += item.text
                elif isinstance(item, TurnDone):
                    if item.text is not None and not outcome.text:
                        outcome.text = item.text
                    return None
                elif isinstance(item, TurnFailed):
                    outcome.error = item.code
                    self._metrics.platform_error(item.code)
                    return turn_failed_text(self._t, item, trigger=answer.trigger, room_id=room_id)
                elif isinstance(item, EmittedFile):
                    outcome.files.append(item.path)
                    if self._on_file is not None:
                        await self._on_file(room_id, answer.trigger, item, len(outcome.files))
                elif isinstance(item, StatusUpdate):
                    typing.on = True
                    await self._typing(room_id, True)

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

    # -- showing the answer ---------------------------------------------------------------

    async def _flush(
        self, room_id: str, answer: AnswerState, outcome: TurnOutcome, *, final: bool
    ) -> float:
        """Show the text so far: finish the parts it outgrew, then update the current one.

        Progress (`final=False`) is best effort: a refused or failed edit is skipped
        (the next flush or the final one shows the text); returns how long the
        homeserver asked us to wait (0.0 if it did not). The final flush retries until
        every part is in the room.
        """
        text = outcome.text
        while rest := text[answer.start :]:
            if not final and holds_first_message(
                answer, rest, first_chars=self._first_chars, now=anyio.current_time()
            ):
                return 0.0
            if not final and fits_edit(answer, answer.reopen + rest):
                shown = answer.reopen + rest
                if shown == answer.shown or not may_edit(answer, self._max_edits):
                    return 0.0
                try:
                    await self._show(room_id, answer, outcome, shown, last=False)
                except EventTooLarge:
                    if not answer.shrink():
                        return 0.0  # the final flush says so
                    continue
                except MatrixRateLimited as exc:
                    log.info("answer.edit_skipped", room_id=room_id, retry_in=exc.retry_after)
                    return exc.retry_after
                except MatrixError as exc:
                    log.info("answer.edit_skipped", room_id=room_id, error=str(exc))
                return 0.0
            # The rest outgrew the current part (or this is the end): finish the part.
            fits = fits_edit if answer.event_id is not None else fits_message
            part = first_part(rest, functools.partial(fits, answer), reopen=answer.reopen)
            try:
                await self._show(room_id, answer, outcome, part.shown, last=True)
            except EventTooLarge:
                if answer.shrink():
                    continue
                await self._say_too_large(room_id, answer, len(part.source))
            except MatrixError:
                if final:
                    raise
                return 0.0  # the final flush tries again, and raises if it must
            answer.next_part(part)
        return 0.0

    async def _show(
        self, room_id: str, answer: AnswerState, outcome: TurnOutcome, shown: str, *, last: bool
    ) -> None:
        """Send the current part's message, or edit it; `last`: its final text.

        A part's first message is sent patiently in every case: once it may have
        reached the homeserver, the same transaction id must be sent again until
        we know its event id. Progress edits are tried once; final edits patiently.
        A replay edits the first message an earlier run sent (whatever it shows),
        and leaves alone a part an earlier run finished.
        """
        if answer.event_id is not None and shown == answer.shown:
            return  # already shown (by the last progress edit)
        trigger, thread = answer.trigger, answer.thread
        prefix = "answer" if answer.part == 0 else f"answer-part{answer.part}"
        first_txn, final_txn = txn_id_for(trigger, prefix), txn_id_for(trigger, f"{prefix}-final")
        if answer.event_id is None and self._sent is not None:
            earlier = self._sent.sent_message(first_txn)
            if earlier is not None:
                message_sent(answer, outcome, earlier)
                answer.finished = self._sent.sent_message(final_txn) is not None
        if answer.finished:
            answer.shown = shown
            return
        if answer.event_id is None:
            event_id = await send_patiently(
                lambda: self._replier.say(
                    room_id, shown, reply_to=trigger, purpose=prefix, notice=False, thread=thread
                ),
                what=prefix,
            )
            self._remember(first_txn, trigger, event_id)
            message_sent(answer, outcome, event_id)
        else:
            original = event_id = answer.event_id
            answer.edits += 1
            purpose = f"{prefix}-final" if last else f"{prefix}-edit-{answer.edits}"

            async def edit() -> str:
                return await self._replier.edit(
                    room_id, original, shown, reply_to=trigger, purpose=purpose
                )

            if last:
                await send_patiently(edit, what=purpose)
            else:
                await refusal_as_too_large(edit)
            outcome.edits += 1
        if last:
            self._remember(final_txn, trigger, event_id)
            answer.finished = True
        answer.shown = shown

    def _remember(self, txn_id: str, trigger: str, event_id: str) -> None:
        if self._sent is not None:
            self._sent.remember_sent_message(txn_id, trigger, event_id)

    async def _say_too_large(self, room_id: str, answer: AnswerState, chars: int) -> None:
        log.error("answer.too_large", part=answer.part, chars=chars, budget=answer.budget)
        await send_patiently(
            lambda: self._replier.say(
                room_id,
                self._t("answer_too_large", chars=chars),
                reply_to=answer.trigger,
                purpose=f"answer-part{answer.part}-too-large",
                thread=answer.thread,
            ),
            what="too-large",
        )

    async def _event_budget(self, room_id: str) -> int:
        """Bytes of content one event of the answer may have in this room (`event_budget`)."""
        try:
            encrypted = await self._matrix.room_is_encrypted(room_id)
        except MatrixError:
            encrypted = True  # the smaller budget is safe either way
        return event_budget(self._max_event_bytes, encrypted=encrypted)

    async def _typing(self, room_id: str, on: bool) -> None:
        if self._signals is not None:  # sent in the background (tasks/room_signals.py)
            self._signals.typing(room_id, on)
            return
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
