"""A turn is bounded in time and in size: an endless agent no longer holds its room."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from fakes import FakeMatrix
from test_turns import ROOM, TRIGGER, ScriptedPlatform, turn

from contracts.platform import PlatformEvent, TextDelta, TurnDone, UserTurn
from tasks.catalogue import Catalogue
from tasks.turn_limits import BoundedTurns
from tasks.turns import TurnStreamer


class EndlessAgent(ScriptedPlatform):
    """Streams a word every `every` seconds, forever; records whether its stream was closed."""

    def __init__(self, every: float) -> None:
        super().__init__([])
        self.every = every
        self.closed = False

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        try:
            while True:
                await anyio.sleep(self.every)
                yield TextDelta(text="more ")
        finally:
            self.closed = True


def streamer(matrix: FakeMatrix, platform: BoundedTurns) -> TurnStreamer:
    return TurnStreamer(matrix, platform, Catalogue(), edit_interval=3600.0)


def bodies(matrix: FakeMatrix) -> list[str]:
    return [m.content.get("m.new_content", m.content)["body"] for m in matrix.sent]


@pytest.mark.virtual_time
async def test_a_turn_that_never_ends_is_stopped_at_the_deadline_with_a_notice(
    time_is_virtual: bool,
) -> None:
    limit, every = (600.0, 7.0) if time_is_virtual else (0.2, 0.01)
    agent = EndlessAgent(every)
    matrix = FakeMatrix()
    started = anyio.current_time()

    with anyio.fail_after(limit * 3):
        outcome = await streamer(matrix, BoundedTurns(agent, max_seconds=limit)).run(ROOM, turn())

    assert outcome.error == "turn_timeout"
    assert agent.closed
    if time_is_virtual:
        assert anyio.current_time() - started == pytest.approx(limit)
    sent = bodies(matrix)
    assert any(body.startswith("more more") for body in sent)  # what came so far is kept
    assert any("took too long" in body for body in sent)


async def test_an_answer_past_the_size_limit_is_cut_with_a_notice() -> None:
    script: list[PlatformEvent | float | Exception] = [
        TextDelta(text="a" * 600),
        TextDelta(text="b" * 600),
        TextDelta(text="never shown"),
        TurnDone(),
    ]
    matrix = FakeMatrix()

    outcome = await streamer(matrix, BoundedTurns(ScriptedPlatform(script), max_chars=1000)).run(
        ROOM, turn()
    )

    assert outcome.text == "a" * 600 + "b" * 400
    assert outcome.error == "answer_too_long"
    assert any("too long and was cut off" in body for body in bodies(matrix))
    assert all(m.content.get("lambda.surface.reply_to") == TRIGGER for m in matrix.sent)


async def test_a_done_event_with_an_oversized_full_text_is_cut_too() -> None:
    matrix = FakeMatrix()
    platform = BoundedTurns(ScriptedPlatform([TurnDone(text="x" * 1500)]), max_chars=1000)

    outcome = await streamer(matrix, platform).run(ROOM, turn())

    assert outcome.text == "x" * 1000
    assert outcome.error == "answer_too_long"


async def test_a_turn_within_its_limits_passes_unchanged() -> None:
    script: list[PlatformEvent | float | Exception] = [
        TextDelta(text="hello "),
        TextDelta(text="there"),
        TurnDone(),
    ]
    matrix = FakeMatrix()
    platform = BoundedTurns(ScriptedPlatform(script), max_seconds=60, max_chars=11)

    outcome = await streamer(matrix, platform).run(ROOM, turn())

    assert outcome.text == "hello there"
    assert outcome.error is None
    assert bodies(matrix) == ["hello there"]
