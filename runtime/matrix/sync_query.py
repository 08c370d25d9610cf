"""The query string of the bot's ``/sync`` requests (no nio here: see runtime/matrix/snapshot.py).

Synapse keeps each /sync answer for ~2 minutes (``sync_response_cache_duration``)
keyed on (user, device, since, filter, timeout, full_state, ...), and it ignores
``timeout`` when ``since`` is missing or ``full_state`` is set. Snapshot syncs
therefore add a varying offset to ``timeout``, so a restarted reconciliation never
gets a stale snapshot. Long polls add a smaller one (it is a real wait when nothing
is new): within a process it never repeats, across processes it starts at random. A
zero-timeout incremental sync adds none: a cached answer to it is old but harmless
(its ``next_batch`` leads on to everything after it), while an offset would make the
caught-up check wait for it.

Snapshot syncs also ask for MSC4222 ``state_after`` (``USE_STATE_AFTER``): the rooms'
state as of the end of their timelines, current even at a forked tip, whatever the
window (tasks/reconcile.py). A server without it ignores the parameter (Synapse 1.163
reads it only for users with its experimental feature ``msc4222`` on) and answers
``state`` as before; runtime/matrix/parse.py reads either. Incremental syncs do not ask:
their state sections keep the meaning the sync task expects.
"""

from __future__ import annotations

import json
from typing import Any, Final

SNAPSHOT_TIMEOUT_SPREAD: Final = 1_000_000
# How long a full-state sync may take to answer (the bound of its HTTP request, not a
# long poll). It grows with the rooms of the account: on the benchmark machine Synapse
# answered 10,000 rooms in 74 s (timeline 0) and 119 s (the 30-event window), so the
# old bound of 120 s failed every wiped-database start there, and a retry started the
# computation over. A bound that short only catches a hung connection sooner.
SNAPSHOT_TIMEOUT_S: Final = 600.0
# MSC4222's query parameter (unstable prefix; Synapse 1.163 knows no stable name yet).
USE_STATE_AFTER: Final = "org.matrix.msc4222.use_state_after"
INCREMENTAL_TIMEOUT_SPREAD: Final = 250


# State the bot never reads (tasks/room_state.py, adoption.py, rebuild.py read markers,
# names, create, members, Space links; the crypto side encryption and members): left out
# of snapshot syncs, where every room's full state comes at once. Four of a chat room's
# eleven state events, among them the largest (power levels).
SNAPSHOT_NOT_TYPES: Final = (
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)
# The event fields a snapshot keeps (runtime/matrix/parse.event_from_json reads these; of
# `unsigned` only the previous content and the bundled edit are read): without `age` and
# `membership` in every event's `unsigned`, 10,000 rooms parse into about 20 MiB less.
SNAPSHOT_EVENT_FIELDS: Final = (
    "type",
    "state_key",
    "sender",
    "content",
    "event_id",
    "origin_server_ts",
    "unsigned.prev_content",
    "unsigned.m\\.relations",
)


def sync_filter(timeline_limit: int, *, snapshot: bool = False) -> str:
    """The bot's /sync filter: rooms' state and timeline, global account data; no more.

    Presence, typing and receipts (ephemeral) and room account data are left out:
    each of them would wake the long poll (the bot's own typing notices too) for
    nothing, and computing them made the full-state sync of 1000 rooms take about
    9 s instead of 5-7 s (benchmarks/README.md). A `snapshot` (full-state) sync also
    leaves out `SNAPSHOT_NOT_TYPES`, in its state and its timeline: less for Synapse to
    send and for the bot to hold (at 10,000 rooms the answer is tens of MB), and keeps
    only `SNAPSHOT_EVENT_FIELDS` of each event. Members are never lazy-loaded:
    reconciliation and the crypto side read every member.
    """
    not_types = {"not_types": list(SNAPSHOT_NOT_TYPES)} if snapshot else {}
    fields = {"event_fields": list(SNAPSHOT_EVENT_FIELDS)} if snapshot else {}
    # Compact and stable: Synapse keys its sync response cache on the filter text.
    return json.dumps(
        {
            **fields,
            "presence": {"not_types": ["*"]},
            "room": {
                "timeline": {"limit": timeline_limit, **not_types},
                "state": {"lazy_load_members": False, **not_types},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
        },
        separators=(",", ":"),
    )


def sync_query(
    since: str | None,
    *,
    timeout_ms: int,
    full_state: bool,
    timeline_limit: int | None,
    seq: int,
) -> dict[str, Any]:
    """Query parameters of one /sync; `seq` is the caller's counter (see the module doc)."""
    if since is None or full_state:
        offset = seq % SNAPSHOT_TIMEOUT_SPREAD
    elif timeout_ms > 0:
        offset = seq % INCREMENTAL_TIMEOUT_SPREAD
    else:
        offset = 0
    query: dict[str, Any] = {"timeout": timeout_ms + offset}
    if since:
        query["since"] = since
    if full_state:
        query["full_state"] = "true"
    if since is None or full_state:
        query[USE_STATE_AFTER] = "true"
    if timeline_limit is not None:
        query["filter"] = sync_filter(timeline_limit, snapshot=since is None or full_state)
    return query
