"""One retry policy: a pure backoff schedule and one helper that retries a call on it.

:class:`Backoff` decides how long to wait before the n-th retry; :func:`retry`
calls something again on that schedule while it fails in a way the caller
names retryable. Every retry loop of the bot is one of these.

Who owns retries, per boundary (exactly one layer each, so a failure is never
retried on two schedules at once):

- homeserver: ``tasks/sync.py`` (the sync loop, and the handling of each event)
  and ``runtime/app.py`` (logging in); within an agent turn, ``tasks/turns.py``
  (through ``tasks/answer_sends.py``) retries the sends that must arrive (a part's
  first message and final text), so a failed send is not turned into a re-run of the
  whole turn; the Matrix adapter itself tries once;
- platform: the HTTP adapter ``runtime/platforms/http.py`` (it knows which calls
  are safe to resend); the connection pool does not retry;
- workspace: ``tasks/materializer.py`` (moving a file between the homeserver's
  media repository and the workspace).

A server's hint replaces the schedule: after an error with a ``retry_after``
attribute (seconds, as :class:`contracts.matrix.MatrixRateLimited` carries from
the homeserver's ``retry_after_ms``) the next try comes that long after, no
sooner (the server knows when its bucket refills) and no later.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
import structlog

__all__ = ["MAX_RETRY_AFTER", "Backoff", "RetryOn", "retry", "retry_after_hint"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

T = TypeVar("T")

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Which failures are retried: exception classes, or a predicate over the error."""

MAX_RETRY_AFTER = 300.0
"""A server's ``retry_after`` longer than this (seconds) is cut to it: a wrong hint
must not park a task for a day."""

# factor**64 for any sane factor is far above any sane cap; the bound keeps the
# power from overflowing a float after many failures.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor**(attempt - 1)``, capped at ``max``.

    The delay is then moved by up to ``jitter`` of itself, up or down, at
    random, so that callers failing together do not retry in lockstep. It never
    exceeds ``max`` and is never negative. Raises ``ValueError`` on a schedule
    that makes no sense.
    """

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1
    """Fraction of the delay added or removed at random, within [0, 1]."""

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.max:
            raise ValueError(
                f"Backoff needs 0 <= initial <= max, got initial={self.initial} and max={self.max}"
            )
        if not self.factor >= 1:
            raise ValueError(f"Backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1). Pure given ``rng``."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        delay = min(self.initial * self.factor**exponent, self.max)
        if self.jitter:
            uniform = random.uniform if rng is None else rng.uniform
            delay *= 1 + uniform(-self.jitter, self.jitter)
        return min(max(delay, 0.0), self.max)


def retry_after_hint(error: Exception) -> float | None:
    """The seconds a server asked us to wait (an error's ``retry_after``), if any."""
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool) and math.isfinite(hint):
        return min(max(float(hint), 0.0), MAX_RETRY_AFTER)
    return None


def _matches(retry_on: RetryOn, error: Exception) -> bool:
    if isinstance(retry_on, type | tuple):
        return isinstance(error, retry_on)
    return retry_on(error)


async def retry(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: RetryOn,
    attempts: int | None = None,
    operation: str,
    rng: random.Random | None = None,
    log_fields: Mapping[str, object] | None = None,
) -> T:
    """``await call()``, called again after a wait while it raises a ``retry_on`` error.

    ``attempts`` bounds the calls in all (``None``: until it succeeds or fails
    otherwise); when they are used up the last error propagates unchanged. An
    error that ``retry_on`` does not match propagates at once. The wait before
    retry n is ``backoff.delay(n, rng)``, or exactly what the server asked for
    when the error carries a ``retry_after`` (see :func:`retry_after_hint`).

    Each retry logs one ``retry.scheduled`` warning naming ``operation``, the
    attempt, the wait and the error (type and a short reason), plus ``log_fields`` (no message
    bodies or secrets there). Cancellation is never caught: it propagates out of
    the call and out of the wait. Time is anyio's, so trio's ``MockClock``
    drives it in tests.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as error:
            if not _matches(retry_on, error) or (attempts is not None and attempt >= attempts):
                raise
            hint = retry_after_hint(error)
            wait = backoff.delay(attempt, rng) if hint is None else hint
            log.warning(
                "retry.scheduled",
                operation=operation,
                attempt=attempt + 1,
                of=attempts,
                delay=round(wait, 3),
                error=type(error).__name__,
                reason=str(error)[:200],
                **(log_fields or {}),
            )
        await anyio.sleep(wait)
        attempt += 1
