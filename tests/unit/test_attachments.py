from __future__ import annotations

import anyio
import pytest

from tasks.attachments import DEFAULT_STAGING_TTL, AttachmentStaging


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def staging(clock: FakeClock) -> AttachmentStaging:
    return AttachmentStaging(ttl=60.0, clock=clock)


def test_take_drains_the_room_in_staging_order(staging: AttachmentStaging) -> None:
    staging.stage("!r", "a.png")
    staging.stage("!r", "b.pdf")

    assert staging.take("!r") == ("a.png", "b.pdf")
    assert staging.take("!r") == ()


def test_peek_does_not_drain(staging: AttachmentStaging) -> None:
    staging.stage("!r", "a.png")

    assert staging.peek("!r") == ("a.png",)
    assert staging.peek("!r") == ("a.png",)


def test_rooms_are_separate(staging: AttachmentStaging) -> None:
    staging.stage("!a", "a.png")
    staging.stage("!b", "b.png")

    assert staging.take("!a") == ("a.png",)
    assert staging.peek("!b") == ("b.png",)


def test_clear_forgets_only_this_room(staging: AttachmentStaging) -> None:
    staging.stage("!a", "a.png")
    staging.stage("!b", "b.png")

    assert staging.clear("!a") == 1
    assert staging.peek("!a") == ()
    assert staging.peek("!b") == ("b.png",)


def test_staging_the_same_path_twice_keeps_one(staging: AttachmentStaging) -> None:
    staging.stage("!r", "a.png")
    staging.stage("!r", "b.png")
    staging.stage("!r", "a.png")

    assert staging.take("!r") == ("b.png", "a.png")


def test_paths_expire_after_the_ttl(staging: AttachmentStaging, clock: FakeClock) -> None:
    staging.stage("!r", "old.png")
    clock.now += 30
    staging.stage("!r", "new.png")

    clock.now += 31

    assert staging.take("!r") == ("new.png",)


def test_expired_rooms_are_swept(staging: AttachmentStaging, clock: FakeClock) -> None:
    staging.stage("!idle", "a.png")
    clock.now += 61
    staging.stage("!busy", "b.png")

    assert staging.statistics().rooms == 1


def test_expire_drops_expired_paths_in_every_room_and_counts_them(
    staging: AttachmentStaging, clock: FakeClock
) -> None:
    staging.stage("!a", "inbox/old.png")
    staging.stage("!b", "inbox/old.txt")
    clock.now += 40
    staging.stage("!b", "inbox/new.txt")
    clock.now += 21

    assert staging.expire() == 2
    assert staging.expire() == 0
    assert staging.peek("!b") == ("inbox/new.txt",)
    assert staging.statistics().rooms == 1


def test_at_most_max_per_room_are_kept(clock: FakeClock) -> None:
    staging = AttachmentStaging(ttl=60.0, max_per_room=2, clock=clock)
    for name in ("1", "2", "3"):
        staging.stage("!r", name)

    assert staging.take("!r") == ("2", "3")


def test_default_ttl_is_thirty_minutes() -> None:
    assert DEFAULT_STAGING_TTL == 30 * 60


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_non_positive_ttl_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        AttachmentStaging(ttl=ttl)


@pytest.mark.virtual_time
async def test_default_clock_follows_the_event_loop(time_is_virtual: bool) -> None:
    # Under trio's MockClock the real default TTL passes instantly; asyncio uses real time.
    ttl = DEFAULT_STAGING_TTL if time_is_virtual else 0.05
    staging = AttachmentStaging(ttl=ttl)
    staging.stage("!r", "a.png")

    await anyio.sleep(ttl / 2)
    assert staging.peek("!r") == ("a.png",)

    await anyio.sleep(ttl / 2 + 0.01)
    assert staging.take("!r") == ()
