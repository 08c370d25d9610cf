"""TurnStreamer: one message per answer, edited at a bounded rate; failures said clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from itertools import pairwise

import anyio
import pytest
from fakes import FakeMatrix, SentMessage

from contracts.markers import REPLY_TO_FIELD
from contracts.metrics import NullMetrics
from contracts.platform import (
    ContextInfo,
    EmittedFile,
    PlatformEvent,
    PlatformHealth,
    PlatformUnavailable,
    Snapshot,
    StatusUpdate,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from tasks.catalogue import Catalogue
from tasks.turns import TurnStreamer

ROOM = "!chat:example.org"
TRIGGER = "$user-message"


def turn(text: str = "hello") -> UserTurn:
    return UserTurn(agent_id="echo", platform_chat_id="7", text=text, idempotency_key=TRIGGER)


class ScriptedPlatform:
    """Plays a script: events, pauses (a float: sleep that long) and a final exception."""

    def __init__(self, script: Sequence[PlatformEvent | float | Exception]) -> None:
        self.script = list(script)

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        for step in self.script:
            if isinstance(step, Exception):
                raise step
            if isinstance(step, float):
                await anyio.sleep(step)
            else:
                yield step

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        pass

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        raise AssertionError("turn tests never touch snapshots")

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return []

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        raise AssertionError("turn tests never touch snapshots")

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id)

    async def health(self) -> PlatformHealth:
        return PlatformHealth(ok=True)


class RecordingMetrics(NullMetrics):
    def __init__(self) -> None:
        self.platform_errors: list[str] = []

    def platform_error(self, code: str) -> None:
        self.platform_errors.append(code)


def streamer(
    matrix: FakeMatrix, platform: ScriptedPlatform, *, edit_interval: float = 60.0, **kw: object
) -> TurnStreamer:
    return TurnStreamer(
        matrix,  # type: ignore[arg-type]
        platform,
        Catalogue("en"),
        edit_interval=edit_interval,
        **kw,  # type: ignore[arg-type]
    )


def edits_of(matrix: FakeMatrix, original: str) -> list[SentMessage]:
    return [m for m in matrix.sent if m.content.get("m.relates_to", {}).get("event_id") == original]


@pytest.mark.virtual_time
async def test_a_slow_stream_is_one_message_edited_at_a_bounded_rate(
    time_is_virtual: bool,
) -> None:
    # Virtual time on trio; on asyncio the same script a hundred times faster.
    scale = 1.0 if time_is_virtual else 0.01
    interval = 1.0 * scale
    words = [f"w{n} " for n in range(20)]
    script: list[PlatformEvent | float | Exception] = []
    for word in words:
        script += [TextDelta(text=word), 0.3 * scale]
    script.append(TurnDone())
    matrix = FakeMatrix()
    started = anyio.current_time()

    outcome = await streamer(matrix, ScriptedPlatform(script), edit_interval=interval).run(
        ROOM, turn()
    )

    elapsed = anyio.current_time() - started
    full = "".join(words)
    [first, *rest] = matrix.sent
    assert first.content["m.relates_to"] == {"m.in_reply_to": {"event_id": TRIGGER}}
    assert first.content[REPLY_TO_FIELD] == TRIGGER
    edits = edits_of(matrix, first.event_id)
    assert edits == rest, "everything after the first message edits it"
    assert len(edits) >= 2, "a slow answer shows progress"
    assert len(matrix.sent) <= elapsed / interval + 1, "no more than one send per interval"
    progress = [m.at for m in matrix.sent[:-1]]
    assert all(b - a >= interval for a, b in pairwise(progress))
    assert edits[-1].content["m.new_content"]["body"] == full
    assert outcome.text == full
    assert outcome.message_event_id == first.event_id


async def test_a_fast_stream_is_sent_as_one_message() -> None:
    script: list[PlatformEvent | float | Exception] = [TextDelta(text=f"{n} ") for n in range(50)]
    script.append(TurnDone())
    matrix = FakeMatrix()

    outcome = await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == outcome.text == "".join(f"{n} " for n in range(50))
    assert message.content["format"] == "org.matrix.custom.html"
    assert outcome.edits == 0


async def test_done_text_is_used_when_no_deltas_came() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([TurnDone(text="**all** at once")])).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["formatted_body"] == "<p><strong>all</strong> at once</p>"


async def test_a_platform_error_becomes_a_clear_message() -> None:
    matrix = FakeMatrix()
    metrics = RecordingMetrics()

    outcome = await streamer(
        matrix, ScriptedPlatform([PlatformUnavailable("agent is down")]), metrics=metrics
    ).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == (
        "⚠️ The agent could not answer: agent is down. Please try again in a moment."
    )
    assert message.content[REPLY_TO_FIELD] == TRIGGER
    assert outcome.error == "agent is down"
    assert metrics.platform_errors == ["unavailable"]


async def test_a_platform_error_without_text_names_its_code() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([PlatformUnavailable()])).run(ROOM, turn())

    assert "unavailable" in matrix.sent[0].content["body"]


async def test_turn_failed_becomes_its_message() -> None:
    matrix = FakeMatrix()
    failed = TurnFailed(code="tool_crashed", message="the calculator exploded")
    metrics = RecordingMetrics()

    outcome = await streamer(matrix, ScriptedPlatform([failed]), metrics=metrics).run(ROOM, turn())

    [message] = matrix.sent
    assert message.content["body"] == (
        "⚠️ The agent reported an error (tool_crashed): the calculator exploded"
    )
    assert outcome.error == "tool_crashed"
    assert metrics.platform_errors == ["tool_crashed"]


async def test_text_before_a_failure_is_still_shown() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        TextDelta(text="partial"),
        TurnFailed(code="oops", message="lost it"),
    ]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    bodies = sorted(m.content["body"] for m in matrix.sent)
    assert bodies == ["partial", "⚠️ The agent reported an error (oops): lost it"]


async def test_a_quick_answer_shows_no_typing() -> None:
    matrix = FakeMatrix()

    await streamer(matrix, ScriptedPlatform([TextDelta(text="hi"), TurnDone()])).run(ROOM, turn())

    assert [m.content["body"] for m in matrix.sent] == ["hi"]
    assert matrix.typing == []


@pytest.mark.virtual_time
async def test_typing_is_shown_when_the_agent_is_slow_and_cleared_after(
    time_is_virtual: bool,
) -> None:
    scale = 1.0 if time_is_virtual else 0.01
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        1.0 * scale,
        TextDelta(text="hi"),
        TurnDone(),
    ]

    await streamer(matrix, ScriptedPlatform(script), typing_delay=0.3 * scale).run(ROOM, turn())

    assert matrix.typing == [(ROOM, True), (ROOM, False)]
    assert [m.content["body"] for m in matrix.sent] == ["hi"]


async def test_a_status_update_shows_typing_at_once() -> None:
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [
        StatusUpdate(status="thinking"),
        TextDelta(text="hi"),
        TurnDone(),
    ]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert matrix.typing == [(ROOM, True), (ROOM, False)]


async def test_typing_failures_do_not_fail_the_turn() -> None:
    from contracts.matrix import MatrixUnreachable

    matrix = FakeMatrix()
    matrix.fail["set_typing"] = [MatrixUnreachable("502"), MatrixUnreachable("502")]
    script: list[PlatformEvent | float | Exception] = [
        StatusUpdate(status="thinking"),
        TextDelta(text="hi"),
        TurnDone(),
    ]

    outcome = await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert outcome.text == "hi"
    assert [m.content["body"] for m in matrix.sent] == ["hi"]
    assert matrix.fail["set_typing"] == [], "both typing changes were tried"


async def test_emitted_files_reach_the_file_handler() -> None:
    matrix = FakeMatrix()
    seen: list[tuple[str, str, str, int]] = []

    async def on_file(room_id: str, trigger: str, file: EmittedFile, number: int) -> None:
        seen.append((room_id, trigger, file.path, number))

    script: list[PlatformEvent | float | Exception] = [
        EmittedFile(path="out/a.txt"),
        EmittedFile(path="out/b.png", mimetype="image/png"),
        TurnDone(text="two files"),
    ]

    outcome = await streamer(matrix, ScriptedPlatform(script), on_file=on_file).run(ROOM, turn())

    assert seen == [(ROOM, TRIGGER, "out/a.txt", 1), (ROOM, TRIGGER, "out/b.png", 2)]
    assert outcome.files == ["out/a.txt", "out/b.png"]


async def test_running_the_same_turn_again_sends_nothing_new() -> None:
    # A crash after the answer went out: the re-handled turn reuses the transaction ids.
    matrix = FakeMatrix()
    script: list[PlatformEvent | float | Exception] = [TextDelta(text="hi"), TurnDone()]

    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())
    await streamer(matrix, ScriptedPlatform(script)).run(ROOM, turn())

    assert len(matrix.sent) == 1
