"""tasks.retry: the backoff schedule and the retry helper."""

from __future__ import annotations

import itertools
import math
import random

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

import tasks.retry
from contracts.matrix import MatrixRateLimited, MatrixRequestError, MatrixUnreachable
from tasks.retry import MAX_RETRY_AFTER, Backoff, retry, retry_after_hint

NO_JITTER = Backoff(initial=1.0, factor=2.0, max=5.0, jitter=0.0)


class Flaky:
    """Raises each of `errors` in turn, then returns `result`; records when it was called."""

    def __init__(self, *errors: Exception, result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(anyio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return self.result

    @property
    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in itertools.pairwise(self.calls)]


# -- Backoff ---------------------------------------------------------------------------------


def test_backoff_grows_by_its_factor_up_to_its_cap() -> None:
    assert [NO_JITTER.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_with_an_even_factor_is_a_fixed_delay() -> None:
    fixed = Backoff(initial=2.0, factor=1.0, max=2.0, jitter=0.0)

    assert {fixed.delay(n) for n in range(1, 10)} == {2.0}


def test_backoff_is_pure_given_the_rng() -> None:
    backoff = Backoff(jitter=0.5)

    first = [backoff.delay(n, random.Random(7)) for n in range(1, 8)]
    again = [backoff.delay(n, random.Random(7)) for n in range(1, 8)]

    assert first == again


def test_backoff_survives_a_huge_attempt_number() -> None:
    assert Backoff(initial=1.0, max=30.0, jitter=0.0).delay(10**9) == 30.0


@pytest.mark.parametrize(
    "fields",
    [
        {"initial": -1.0},
        {"initial": 10.0, "max": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_a_senseless_backoff_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**fields)


def test_backoff_is_frozen() -> None:
    with pytest.raises(AttributeError):
        NO_JITTER.initial = 3.0  # type: ignore[misc]


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.0, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    ceiling=st.floats(min_value=10.0, max_value=600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(),
)
def test_backoff_stays_within_its_jitter_and_cap(
    attempt: int, initial: float, factor: float, ceiling: float, jitter: float, seed: int
) -> None:
    backoff = Backoff(initial=initial, factor=factor, max=ceiling, jitter=jitter)

    delay = backoff.delay(attempt, random.Random(seed))

    nominal = min(initial * factor ** min(attempt - 1, 64), ceiling)
    assert nominal * (1 - jitter) - 1e-9 <= delay <= min(nominal * (1 + jitter), ceiling) + 1e-9


# -- retry_after_hint ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (MatrixRateLimited("slow down", retry_after=1.5), 1.5),
        (MatrixRateLimited("slow down", retry_after=10**6), MAX_RETRY_AFTER),
        (MatrixRateLimited("slow down", retry_after=math.inf), None),
        (MatrixUnreachable("502"), None),
        (ValueError("no hint"), None),
    ],
)
def test_retry_after_hint(error: Exception, hint: float | None) -> None:
    assert retry_after_hint(error) == hint


# -- retry ------------------------------------------------------------------------------------


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_retry_waits_on_the_schedule_then_returns() -> None:
    call = Flaky(MatrixUnreachable("502"), MatrixUnreachable("502"), MatrixUnreachable("502"))

    result = await retry(call, NO_JITTER, retry_on=MatrixUnreachable, operation="test")

    assert result == "ok"
    assert call.gaps == [1.0, 2.0, 4.0]


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_retry_honours_the_servers_retry_after() -> None:
    # A homeserver's 429 with retry_after_ms=7500 reaches us as retry_after=7.5 seconds.
    call = Flaky(MatrixRateLimited("slow down", retry_after=7.5), MatrixUnreachable("502"))

    await retry(call, NO_JITTER, retry_on=(MatrixRateLimited, MatrixUnreachable), operation="test")

    assert call.gaps == [7.5, 2.0]


async def test_retry_gives_up_after_its_attempts_with_the_last_error() -> None:
    fast = Backoff(initial=0.0, max=0.0, jitter=0.0)
    call = Flaky(*(MatrixUnreachable(f"down {n}") for n in range(5)))

    with pytest.raises(MatrixUnreachable, match="down 2"):
        await retry(call, fast, retry_on=MatrixUnreachable, attempts=3, operation="test")

    assert len(call.calls) == 3


async def test_one_attempt_means_no_retry() -> None:
    call = Flaky(MatrixUnreachable("down"))

    with pytest.raises(MatrixUnreachable):
        await retry(call, NO_JITTER, retry_on=MatrixUnreachable, attempts=1, operation="test")

    assert len(call.calls) == 1


async def test_an_error_retry_on_does_not_name_propagates_at_once() -> None:
    call = Flaky(MatrixRequestError("forbidden", errcode="M_FORBIDDEN", status=403))

    with pytest.raises(MatrixRequestError):
        await retry(call, NO_JITTER, retry_on=MatrixUnreachable, operation="test")

    assert len(call.calls) == 1


async def test_retry_on_may_be_a_predicate() -> None:
    fast = Backoff(initial=0.0, max=0.0, jitter=0.0)
    call = Flaky(ValueError("again"), ValueError("stop"))

    with pytest.raises(ValueError, match="stop"):
        await retry(call, fast, retry_on=lambda e: str(e) == "again", operation="test")

    assert len(call.calls) == 2


async def test_each_retry_logs_one_structured_line() -> None:
    fast = Backoff(initial=0.0, max=0.0, jitter=0.0)
    call = Flaky(MatrixUnreachable("502"), MatrixUnreachable("timeout"))

    with capture_logs() as logs:
        await retry(
            call,
            fast,
            retry_on=MatrixUnreachable,
            attempts=5,
            operation="sync",
            log_fields={"room_id": "!r"},
        )

    lines = [e for e in logs if e["event"] == "retry.scheduled"]
    assert [(e["operation"], e["attempt"], e["of"]) for e in lines] == [
        ("sync", 2, 5),
        ("sync", 3, 5),
    ]
    assert [e["error"] for e in lines] == ["MatrixUnreachable", "MatrixUnreachable"]
    assert {e["room_id"] for e in lines} == {"!r"}
    assert {e["log_level"] for e in lines} == {"warning"}


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_cancellation_during_the_wait_propagates() -> None:
    call = Flaky(*(MatrixUnreachable("down") for _ in range(100)))

    with anyio.move_on_after(10.0) as scope:
        await retry(call, NO_JITTER, retry_on=MatrixUnreachable, operation="test")

    assert scope.cancelled_caught
    assert len(call.calls) == 4  # at 0, 1, 3 and 7 s; the next would be at 12


async def test_cancellation_inside_the_call_is_never_retried() -> None:
    calls = 0
    waiting = anyio.Event()

    async def blocks() -> None:
        nonlocal calls
        calls += 1
        waiting.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        # retry_on=Exception: cancellation is not an Exception, on either backend.
        tg.start_soon(lambda: retry(blocks, NO_JITTER, retry_on=Exception, operation="test"))
        await waiting.wait()
        tg.cancel_scope.cancel()

    assert calls == 1


async def test_zero_attempts_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        await retry(Flaky(), NO_JITTER, retry_on=Exception, attempts=0, operation="test")


def test_public_api() -> None:
    assert set(tasks.retry.__all__) == {
        "MAX_RETRY_AFTER",
        "Backoff",
        "RetryOn",
        "retry",
        "retry_after_hint",
    }
