"""Reading the counting proxy's log: which requests a bot made, and how long Synapse took."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

# Room ids (`!opaque` in room v12, `!x:server` before), user ids, txn ids, state keys.
_ROOM = re.compile(r"/rooms/[^/]+")
_USER = re.compile(r"/user/[^/]+")
_TAIL = re.compile(r"/(send|state|typing|account_data|receipt)/([^/]+)(/.*)?$")
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
            "receipt": "/receipt/" + match.group(2) + "/{event}",
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


def turn_breakdown(
    records: Sequence[dict[str, Any]], windows: Sequence[tuple[float, float]]
) -> dict[str, list[float]]:
    """Where one bot turn's time goes, per (user send, answer seen) window, in ms.

    In each window: the bot's sync that returned the user's message, then its first
    typing PUT and its first message send. Windows where one of them is missing (the
    message came with an earlier sync, say) are skipped.
    """
    out: dict[str, list[float]] = {
        "sync_return_to_typing_ms": [],
        "typing_request_ms": [],
        "typing_to_send_ms": [],
        "send_request_ms": [],
        "send_done_to_seen_ms": [],
    }
    for start, end in windows:
        inside = sorted(between(records, start, end), key=lambda r: r["t0"])
        syncs = [
            r
            for r in records
            if r.get("sync") and start <= r["t1"] <= end and r.get("status") == 200
        ]
        if not syncs:
            continue
        delivered = min(syncs, key=lambda r: r["t1"])
        after = [r for r in inside if r["t0"] >= delivered["t1"]]
        typing = next((r for r in after if "/typing/" in r["path"]), None)
        send = next((r for r in after if "/send/" in r["path"]), None)
        if typing is None or send is None or send["t0"] < typing["t1"]:
            continue
        out["sync_return_to_typing_ms"].append((typing["t0"] - delivered["t1"]) * 1000)
        out["typing_request_ms"].append((typing["t1"] - typing["t0"]) * 1000)
        out["typing_to_send_ms"].append((send["t0"] - typing["t1"]) * 1000)
        out["send_request_ms"].append((send["t1"] - send["t0"]) * 1000)
        out["send_done_to_seen_ms"].append((end - send["t1"]) * 1000)
    return out


def burst_timeline(records: Sequence[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Per endpoint during [start, end]: count, durations, and when they started and ended
    (seconds after `start`). Long polls are left out."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in between(records, start, end):
        if not is_long_poll(r):
            by.setdefault(endpoint(r), []).append(r)
    out: dict[str, Any] = {}
    for name, items in sorted(by.items()):
        durations = sorted(r["t1"] - r["t0"] for r in items)
        out[name] = {
            "count": len(items),
            "duration_p50_ms": round(durations[len(durations) // 2] * 1000, 1),
            "duration_max_ms": round(durations[-1] * 1000, 1),
            "first_start_s": round(min(r["t0"] for r in items) - start, 3),
            "last_end_s": round(max(r["t1"] for r in items) - start, 3),
        }
    return out
