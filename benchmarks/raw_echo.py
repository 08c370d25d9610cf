"""The baseline: a minimal matrix-nio echo client, `python -m benchmarks.raw_echo`.

It joins every room it is invited to and answers every text message from someone
else with the same text. No store, no typing, no ledger, no formatting: the least
work a Matrix bot can do per message, so the bot's overhead shows against it.
Answers go out as the bot's do: concurrently across rooms, in order within a room,
while the next sync is already waiting (so under load, as in the throughput scenario,
the baseline is not held back by sending one answer at a time).
Credentials come from the environment (RAW_ECHO_HOMESERVER, RAW_ECHO_USER_ID,
RAW_ECHO_DEVICE_ID, RAW_ECHO_TOKEN), never from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

import nio

# The same filter the measuring client uses: timeline only, no typing or presence.
SYNC_FILTER: dict[str, Any] = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "timeline": {"limit": 50},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
}


async def run() -> None:
    client = nio.AsyncClient(os.environ["RAW_ECHO_HOMESERVER"], os.environ["RAW_ECHO_USER_ID"])
    client.restore_login(
        os.environ["RAW_ECHO_USER_ID"],
        os.environ["RAW_ECHO_DEVICE_ID"],
        os.environ["RAW_ECHO_TOKEN"],
    )
    me = client.user_id
    since: str | None = None
    room_locks: dict[str, asyncio.Lock] = {}

    async def answer(room_id: str, bodies: list[str]) -> None:
        # asyncio locks are fair: a room's later batch waits for its earlier one.
        async with room_locks.setdefault(room_id, asyncio.Lock()):
            for body in bodies:
                await client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                )

    try:
        async with asyncio.TaskGroup() as tasks:
            while True:
                response = await client.sync(timeout=30_000, since=since, sync_filter=SYNC_FILTER)
                if not isinstance(response, nio.SyncResponse):
                    await asyncio.sleep(0.5)
                    continue
                first = since is None
                since = response.next_batch
                for room_id in response.rooms.invite:
                    await client.join(room_id)
                if first:
                    print("raw echo ready", flush=True)
                    continue  # history from before the start is not ours to answer
                for room_id, room in response.rooms.join.items():
                    bodies = [
                        event.body
                        for event in room.timeline.events
                        if isinstance(event, nio.RoomMessageText) and event.sender != me
                    ]
                    if bodies:
                        tasks.create_task(answer(room_id, bodies))
    finally:
        await client.close()


def main() -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
