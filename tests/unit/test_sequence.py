"""PlatformChatSequence: ids reserved on the homeserver before use, never reissued."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fakes import FakeMatrix

from contracts.markers import SEQUENCE_ACCOUNT_DATA_TYPE
from contracts.matrix import MatrixUnreachable
from runtime.store import SqliteStore
from tasks.sequence import PlatformChatSequence


@pytest.fixture
def matrix() -> FakeMatrix:
    return FakeMatrix()


def high_water(matrix: FakeMatrix) -> int:
    return int(matrix.account_data[SEQUENCE_ACCOUNT_DATA_TYPE]["reserved_through"])


async def test_first_allocation_reserves_a_block_in_account_data(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    sequence = PlatformChatSequence(store, matrix, block=8)

    first = await sequence.allocate()

    assert first == "1"
    assert high_water(matrix) == 8
    assert store.sequence_state().reserved_through == 8


async def test_no_id_is_handed_out_when_the_reservation_fails(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    sequence = PlatformChatSequence(store, matrix)
    matrix.fail["set_account_data"] = [MatrixUnreachable("502")]

    with pytest.raises(MatrixUnreachable):
        await sequence.allocate()

    assert store.sequence_state().next_value == 1
    assert store.sequence_state().reserved_through == 0
    assert await sequence.allocate() == "1"


async def test_every_id_handed_out_is_covered_by_the_high_water_mark(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    sequence = PlatformChatSequence(store, matrix, block=3)

    for _ in range(10):
        value = int(await sequence.allocate())
        assert value <= high_water(matrix)

    assert len(matrix.account_data_writes) == 4  # blocks 1-3, 4-6, 7-9, 10-12


async def test_a_wiped_store_never_reissues_an_id(tmp_path: Path, matrix: FakeMatrix) -> None:
    with SqliteStore(tmp_path / "first.db") as first:
        before = PlatformChatSequence(first, matrix, block=5)
        issued = {await before.allocate() for _ in range(7)}

    with SqliteStore(tmp_path / "after-loss.db") as wiped:
        after = PlatformChatSequence(wiped, matrix, block=5)
        fresh = [await after.allocate() for _ in range(7)]

    assert not issued & set(fresh)
    assert min(int(v) for v in fresh) > max(int(v) for v in issued)


async def test_a_high_water_mark_above_the_store_raises_the_floor(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    matrix.account_data[SEQUENCE_ACCOUNT_DATA_TYPE] = {"reserved_through": 100}
    sequence = PlatformChatSequence(store, matrix, block=4)

    assert await sequence.allocate() == "101"
    assert high_water(matrix) == 104


async def test_a_garbled_high_water_mark_counts_as_none(
    store: SqliteStore, matrix: FakeMatrix
) -> None:
    matrix.account_data[SEQUENCE_ACCOUNT_DATA_TYPE] = {"reserved_through": "lots"}
    sequence = PlatformChatSequence(store, matrix)

    assert await sequence.remote_high_water() == 0
    assert await sequence.allocate() == "1"


async def test_concurrent_allocations_are_unique(store: SqliteStore, matrix: FakeMatrix) -> None:
    sequence = PlatformChatSequence(store, matrix, block=4)
    issued: list[str] = []

    async def take() -> None:
        issued.append(await sequence.allocate())

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(take)

    assert len(issued) == 50
    assert len(set(issued)) == 50
    assert max(int(v) for v in issued) <= high_water(matrix)
