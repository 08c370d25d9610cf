"""RoomSignals: typing and receipts noted by turns, sent in the background when due."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from fakes import FakeMatrix

from contracts.matrix import MatrixUnreachable
from tasks.room_signals import RoomSignals

ROOM = "!chat:example.org"
OTHER = "!other:example.org"
ALICE = "@alice:example.org"


async def until(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while True:  # a condition with a deadline (the fake has no event for these)
            if condition():
                return
            await anyio.sleep(0.001)


@pytest.fixture
async def matrix() -> FakeMatrix:
    matrix = FakeMatrix()
    for room_id in (ROOM, OTHER):
        matrix.add_invite(ALICE, room_id=room_id)
        matrix.user_joins(room_id, matrix.user_id)
    return matrix


@pytest.fixture
async def signals(matrix: FakeMatrix) -> AsyncIterator[RoomSignals]:
    sender = RoomSignals(matrix, typing_off_delay=60.0, receipt_delay=60.0)
    async with anyio.create_task_group() as tg:
        await tg.start(sender.run)
        yield sender
        tg.cancel_scope.cancel()


def message(matrix: FakeMatrix, room_id: str = ROOM) -> str:
    return matrix.add_message(room_id, ALICE, "hi").event_id


async def test_typing_on_is_sent_at_once(signals: RoomSignals, matrix: FakeMatrix) -> None:
    with signals.handling():
        signals.typing(ROOM, True)
        await until(lambda: matrix.typing == [(ROOM, True)])


async def test_typing_off_waits_while_a_turn_is_handled(
    signals: RoomSignals, matrix: FakeMatrix
) -> None:
    signals.typing(ROOM, True)
    await until(lambda: matrix.typing == [(ROOM, True)])
    with signals.handling():  # another room's answer is being sent
        signals.typing(ROOM, False)
        await anyio.sleep(0.05)
        assert matrix.typing == [(ROOM, True)], "the answers go first"
    await until(lambda: matrix.typing == [(ROOM, True), (ROOM, False)])


@pytest.mark.virtual_time
async def test_typing_off_waits_no_longer_than_its_delay(
    matrix: FakeMatrix, time_is_virtual: bool
) -> None:
    sender = RoomSignals(matrix, typing_off_delay=1.0 if time_is_virtual else 0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(sender.run)
        sender.typing(ROOM, True)
        await until(lambda: matrix.typing == [(ROOM, True)])
        with sender.handling():  # a turn that goes on for long
            sender.typing(ROOM, False)
            await until(lambda: matrix.typing == [(ROOM, True), (ROOM, False)], within=3.0)
        tg.cancel_scope.cancel()


async def test_an_on_and_off_not_yet_sent_cancel_out(matrix: FakeMatrix) -> None:
    sender = RoomSignals(matrix)  # not running yet: nothing is sent

    sender.typing(ROOM, True)
    sender.typing(ROOM, False)
    await sender.flush()

    assert matrix.typing == []
    assert sender.statistics().typing_skipped == 1


async def test_an_off_without_an_on_sends_nothing(matrix: FakeMatrix) -> None:
    sender = RoomSignals(matrix)

    sender.typing(ROOM, False)
    await sender.flush()

    assert matrix.typing == []


async def test_a_receipt_waits_for_the_turns_and_a_sync_after_its_start(
    signals: RoomSignals, matrix: FakeMatrix
) -> None:
    read = message(matrix)
    with signals.handling():
        signals.read(ROOM, read)
        signals.synced()  # the bot's answer came back: delivered
        await anyio.sleep(0.05)
        assert matrix.receipts == [], "still handling: the answers go first"
    await until(lambda: matrix.receipts == [(ROOM, read)])


async def test_a_receipt_waits_for_a_sync_after_the_handling_began(
    signals: RoomSignals, matrix: FakeMatrix
) -> None:
    read = message(matrix)
    with signals.handling():
        signals.read(ROOM, read)
    await anyio.sleep(0.05)
    assert matrix.receipts == [], "the answer may not be delivered yet"

    signals.synced()

    await until(lambda: matrix.receipts == [(ROOM, read)])


async def test_one_receipt_per_room_the_latest(signals: RoomSignals, matrix: FakeMatrix) -> None:
    first, second, other = message(matrix), message(matrix), message(matrix, OTHER)
    with signals.handling():
        signals.read(ROOM, first)
        signals.read(OTHER, other)
        signals.read(ROOM, second)
    signals.synced()

    await until(lambda: len(matrix.receipts) == 2)
    assert sorted(matrix.receipts) == sorted([(ROOM, second), (OTHER, other)])
    assert signals.statistics().receipts_coalesced == 1


@pytest.mark.virtual_time
async def test_under_constant_load_a_receipt_goes_after_its_delay(
    matrix: FakeMatrix, time_is_virtual: bool
) -> None:
    sender = RoomSignals(matrix, receipt_delay=2.0 if time_is_virtual else 0.05)
    read = message(matrix)
    async with anyio.create_task_group() as tg:
        await tg.start(sender.run)
        with sender.handling():  # never quiet
            sender.read(ROOM, read)
            await until(lambda: matrix.receipts == [(ROOM, read)], within=4.0)
        tg.cancel_scope.cancel()


async def test_failures_are_dropped_not_raised(signals: RoomSignals, matrix: FakeMatrix) -> None:
    matrix.fail["send_receipt"] = [MatrixUnreachable("502")]
    matrix.fail["set_typing"] = [MatrixUnreachable("502")]
    read = message(matrix)

    signals.typing(ROOM, True)
    signals.read(ROOM, read)
    signals.synced()

    await until(lambda: signals.statistics().failures == 2)
    signals.typing(ROOM, True)  # the next turn tries again
    await until(lambda: matrix.typing == [(ROOM, True)])


async def test_what_is_left_is_sent_when_the_task_stops(matrix: FakeMatrix) -> None:
    sender = RoomSignals(matrix, receipt_delay=60.0)
    read = message(matrix)
    async with anyio.create_task_group() as tg:
        await tg.start(sender.run)
        with sender.handling():
            sender.read(ROOM, read)
        tg.cancel_scope.cancel()

    assert matrix.receipts == [(ROOM, read)]
