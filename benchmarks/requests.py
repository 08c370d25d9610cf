"""Reading the counting proxy's log: which requests a bot made, and how long Synapse took."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

# Room ids (`!opaque` in room v12, `!x:server` before), user ids, txn ids, state keys.
_ROOM = re.compile(r"/rooms/[^/]+")
_USER = re.compile(r"/user/[^/]+")
_TAIL = re.compile(r"/(send|state|typing|account_data)/([^/]+)(/.*)?$")
LONG_POLL_MS = 1000


def endpoint(record: dict[str, Any]) -> str:
    """`METHOD /path` with ids as placeholders: `PUT /v3/rooms/{room}/send/{type}/{txn}`."""
    path = record["path"].replace("/_matrix/client", "")
    path = _ROOM.sub("/rooms/{room}", path)
    path = _USER.sub("/user/{user}", path)

    def tail(match: re.Match[str]) -> str:
        kind = match.group(1)
        return {
            "send": "/send/{type}/{txn}",
            "state": "/state/{type}/{key}",
            "typing": "/typing/{user}",
            "account_data": "/account_data/" + match.group(2),
        }[kind]

    path = _TAIL.sub(tail, path)
    if record.get("sync"):
        flags = record["sync"]
        kind = (
            "full_state"
            if flags.get("full_state")
            else ("incremental" if flags.get("since") else "initial")
        )
        path += f" ({kind})"
    return f"{record['method']} {path}"


def is_long_poll(record: dict[str, Any]) -> bool:
    sync = record.get("sync") or {}
    return bool(sync.get("since")) and (sync.get("timeout_ms") or 0) >= LONG_POLL_MS


def is_per_room(record: dict[str, Any]) -> bool:
    return "/rooms/" in record["path"]


def between(records: Sequence[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """Requests that arrived at the proxy in [start, end]."""
    return [r for r in records if start <= r["t0"] <= end]


def busy_seconds(records: Sequence[dict[str, Any]], start: float, end: float) -> float:
    """Time in [start, end] during which at least one request (not a long poll) was in flight.

    That is the time the bot spent waiting for Synapse; the rest of the interval is the
    bot's own work (or its start-up) plus the delivery to the observing user.
    """
    spans = sorted(
        (max(r["t0"], start), min(r["t1"], end))
        for r in records
        if not is_long_poll(r) and r["t1"] >= start and r["t0"] <= end
    )
    total = 0.0
    current_start, current_end = None, None
    for s, e in spans:
        if current_end is None or s > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = s, e
        else:
            current_end = max(current_end, e)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by endpoint, per-room requests, and the full-state sync's duration and size."""
    by_endpoint = Counter(endpoint(r) for r in records)
    full = [r for r in records if (r.get("sync") or {}).get("full_state")]
    return {
        "total": len(records),
        "per_room": sum(1 for r in records if is_per_room(r)),
        "by_endpoint": dict(sorted(by_endpoint.items())),
        "full_state_sync_s": round(full[0]["t1"] - full[0]["t0"], 3) if full else None,
        "full_state_sync_bytes": full[0]["bytes"] if full else None,
    }
