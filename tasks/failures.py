"""What a user is told when the agent fails, and what the log keeps.

The room gets a short message with the error's code and a reference (`ref`); the
log line with the same reference holds the detail, credentials redacted
(tasks/redact.py). Nothing internal (agent URLs, addresses, the platform's raw
error body) reaches the room.

The reference is derived from the triggering event id: the same trigger gives the
same ref (a replayed turn reports the same one), and an operator finds it in the log.
"""

from __future__ import annotations

import hashlib
import re

import structlog

from contracts.platform import PlatformError, TurnFailed
from tasks.catalogue import Catalogue
from tasks.redact import redact

__all__ = [
    "LOCAL_FAILURES",
    "error_ref",
    "log_platform_error",
    "platform_error_text",
    "turn_failed_text",
]

log = structlog.get_logger(__name__)

# Codes the bot itself gives a turn it stopped (tasks/turn_limits.py), each shown with
# its own catalogue message instead of the generic "the agent reported an error".
LOCAL_FAILURES = frozenset({"turn_timeout", "answer_too_long"})

_SAFE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def error_ref(trigger: str) -> str:
    """A short reference for the failure of the turn or command `trigger` started."""
    return hashlib.sha256(trigger.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _code(code: str) -> str:
    """The platform's code if it looks like one (it is shown in the room), else `error`."""
    return code if _SAFE_CODE.fullmatch(code) else "error"


def log_platform_error(error: PlatformError, *, trigger: str, room_id: str | None) -> str:
    """Log `error` with its detail redacted; returns the reference the log line carries."""
    ref = error_ref(trigger)
    log.warning(
        "platform.failed",
        code=error.code,
        ref=ref,
        room_id=room_id,
        trigger=trigger,
        detail=redact(str(error)),
    )
    return ref


def platform_error_text(
    t: Catalogue, error: PlatformError, *, trigger: str, room_id: str | None = None
) -> str:
    """Log `error` (redacted) and return the room's message for it."""
    ref = log_platform_error(error, trigger=trigger, room_id=room_id)
    return t("platform_error", code=_code(error.code), ref=ref)


def turn_failed_text(t: Catalogue, failed: TurnFailed, *, trigger: str, room_id: str) -> str:
    """Log a failed turn (the platform's message, redacted) and return the room's message."""
    ref = error_ref(trigger)
    log.warning(
        "turn.failed",
        code=failed.code,
        ref=ref,
        room_id=room_id,
        trigger=trigger,
        detail=redact(failed.message),
    )
    if failed.code in LOCAL_FAILURES:
        return t(failed.code)
    return t("platform_failed", code=_code(failed.code), ref=ref)
