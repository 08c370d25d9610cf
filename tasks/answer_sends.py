"""Sending an answer's events: patiently until they go through, or once.

A part's first message and its final text must arrive: `send_patiently` retries them
within the turn, so a homeserver hiccup never re-runs the agent (this is the
homeserver's retry owner within a turn, tasks/retry.py): after a 429 it waits the
`retry_after` the server names, after a network error or 5xx a backoff. A progress
edit is sent once (`refusal_as_too_large`). Either way an event refused as too large
is raised as :class:`EventTooLarge`, for the caller to cut smaller; any other
MatrixError as itself (retrying cannot help).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from contracts.matrix import MatrixRateLimited, MatrixRequestError, MatrixUnreachable
from tasks.retry import Backoff, retry

# A part's first message and final text are retried here, within the turn, so a
# homeserver hiccup never re-runs the agent (tasks/retry.py names the owners).
SEND_BACKOFF = Backoff(initial=0.5, factor=2.0, max=30.0, jitter=0.1)


class EventTooLarge(Exception):
    """The homeserver refused an event as too large (M_TOO_LARGE)."""


async def refusal_as_too_large(send: Callable[[], Awaitable[str]]) -> str:
    """`send()` once; a refusal as too large (M_TOO_LARGE, 413) raised as EventTooLarge."""
    try:
        return await send()
    except MatrixRequestError as exc:
        if exc.errcode == "M_TOO_LARGE" or exc.status == 413:
            raise EventTooLarge(str(exc)) from exc
        raise


async def send_patiently(send: Callable[[], Awaitable[str]], *, what: str) -> str:
    """`send()` until it goes through (tasks/retry.py: a 429 waits its `retry_after`,
    a network error or 5xx backs off). Raises EventTooLarge for M_TOO_LARGE and any
    other MatrixError as it is (retrying cannot help).
    """
    return await retry(
        lambda: refusal_as_too_large(send),
        SEND_BACKOFF,
        retry_on=(MatrixRateLimited, MatrixUnreachable),
        operation="answer.send",
        log_fields={"what": what},
    )
