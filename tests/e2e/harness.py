"""e2e-only helpers around the bot process and the test user.

The bot process (``BotProcess``), the test user (``UserClient``) and ``onboard`` live in
``runtime.dev`` (bot.py, user.py), shared with the benchmarks.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import nio

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, crypto_housekeeping, onboard


def joined_rooms(synapse: LocalHomeserver, user: RegisteredUser) -> set[str]:
    """The rooms `user` is joined to, asked with its own registration token."""
    r = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/joined_rooms",
        headers={"Authorization": f"Bearer {user.access_token}"},
        timeout=10,
    )
    r.raise_for_status()
    return set(r.json()["joined_rooms"])


def surface_cli(bot: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `surface` subcommand with the bot's configuration."""
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=bot.workdir,
        env=bot.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def room_state_as(synapse: LocalHomeserver, user: RegisteredUser, room_id: str) -> list[Any]:
    r = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/rooms/{room_id}/state",
        headers={"Authorization": f"Bearer {user.access_token}"},
        timeout=10,
    )
    r.raise_for_status()
    events: list[Any] = r.json()
    return events


async def upload_file(
    user: UserClient, room_id: str, name: str, data: bytes, mimetype: str = "text/plain"
) -> str:
    """Upload `data` and post it as an m.file message; returns the event id."""
    import io

    response, _ = await user.client.upload(
        io.BytesIO(data), content_type=mimetype, filename=name, filesize=len(data)
    )
    assert isinstance(response, nio.UploadResponse), response
    sent = await user.client.room_send(
        room_id,
        "m.room.message",
        {
            "msgtype": "m.file",
            "body": name,
            "url": response.content_uri,
            "info": {"mimetype": mimetype, "size": len(data)},
        },
    )
    assert isinstance(sent, nio.RoomSendResponse), sent
    return str(sent.event_id)


async def download(user: UserClient, mxc: str) -> bytes:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    url = f"{user.client.homeserver}/_matrix/client/v1/media/download/{server}/{media_id}"
    async with httpx.AsyncClient() as http:
        r = await http.get(url, headers={"Authorization": f"Bearer {user.user.access_token}"})
    r.raise_for_status()
    return r.content


def binding(text: str) -> dict[str, str]:
    """The binding shown by `!context` (the in-process agent's memory is not durable)."""
    fields = {}
    for line in text.splitlines():
        if line.startswith("- ") and ":" in line:
            key, value = line[2:].split(":", 1)
            if key.strip() in ("chat", "agent", "platform chat"):
                fields[key.strip()] = value.strip()
    assert len(fields) == 3, text
    return fields


async def chat_at_a_forked_tip(alice: UserClient, bot: BotProcess) -> tuple[str, dict[str, str]]:
    """A chat whose Space's DAG forks at its tip, answered in; returns it and its binding.

    Onboarding links the chat into the Space while the user joins: the Space's DAG forks
    at its tip, and Synapse's full-sync `state` alone (timeline 0) would miss the link.
    """
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "!clear", expect="!yes")
    await alice.send(chat, "!yes")  # the marker is rewritten as the user writes on
    await alice.send(chat, "typing on")
    await alice.wait_for(lambda: len(alice.bot_messages(chat)) >= 4, what="answers")
    return chat, binding(await alice.ask(chat, "!context", expect="platform chat"))


_receipt_reads = itertools.count()


async def read_receipt(http: httpx.AsyncClient, room_id: str, reader: str) -> str | None:
    """The event `reader`'s m.read receipt is on, from an initial /sync of the room by the
    user `http` is authorised as (its base URL is the homeserver's).

    Each call asks with another `timeout` (an initial sync does not wait on it): Synapse
    keeps an identical sync's answer for two minutes, so a poll repeating one query
    would see the first answer, from before the receipt, again and again.
    """
    room_filter = {"room": {"rooms": [room_id], "timeline": {"limit": 1}}}
    query = {"filter": json.dumps(room_filter), "timeout": str(next(_receipt_reads))}
    response = await http.get("/_matrix/client/v3/sync", params=query)
    response.raise_for_status()
    room = response.json().get("rooms", {}).get("join", {}).get(room_id, {})
    for event in room.get("ephemeral", {}).get("events", []):
        if event.get("type") != "m.receipt":
            continue
        for event_id, kinds in event.get("content", {}).items():
            if reader in kinds.get("m.read", {}):
                return str(event_id)
    return None


def override_ratelimit(
    synapse: LocalHomeserver,
    admin: RegisteredUser,
    user_id: str,
    *,
    per_second: int | None,
    burst_count: int = 0,
) -> None:
    """Set `user_id`'s message rate limit through Synapse's admin API (0/0: exempt).

    `per_second=None` deletes the override: the homeserver's `rc_message` applies
    again. The API takes whole numbers only (a limit below 1/s needs `rc_message`,
    see the `limited_synapse` fixture).
    """
    url = f"{synapse.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit"
    headers = {"Authorization": f"Bearer {admin.access_token}"}
    if per_second is None:
        response = httpx.delete(url, headers=headers, timeout=10)
    else:
        body = {"messages_per_second": per_second, "burst_count": burst_count}
        response = httpx.post(url, json=body, headers=headers, timeout=10)
    response.raise_for_status()


def handled(bot: BotProcess, event_ids: Iterable[str]) -> bool:
    """Every one of `event_ids` is in the bot's ledger, done."""
    wanted = set(event_ids)
    with sqlite3.connect(f"file:{bot.db_path}?mode=ro", uri=True) as db:
        done = {
            row[0]
            for row in db.execute("SELECT event_id FROM ledger WHERE status = 'done'").fetchall()
        }
    return wanted <= done


# A bot that shows an answer at once and streams the rest by edits: for the tests of
# streaming itself (by default the first message waits for a substantial start).
STREAM_AT_ONCE = {"SURFACE_STREAM_FIRST_CHARS": "0"}


class EncryptedUser(UserClient):
    """A UserClient with end-to-end encryption: nio decrypts what it syncs."""

    @classmethod
    async def login_encrypted(
        cls, base_url: str, user: RegisteredUser, store: Path
    ) -> EncryptedUser:
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        client = nio.AsyncClient(base_url, user.user_id, store_path=str(store), config=config)
        client.restore_login(user.user_id, user.device_id, user.access_token)
        me = cls(client, user)
        me.dm_ids = []
        await me.sync(0)
        return me

    dm_ids: list[str]

    async def sync(self, timeout_ms: int = 1000) -> None:
        await super().sync(timeout_ms)
        await crypto_housekeeping(self.client)

    async def send(self, room_id: str, text: str) -> str:
        if room_id not in self.client.rooms:  # just joined: nio must see it to encrypt
            await self.wait_for(lambda: room_id in self.client.rooms, what=f"{room_id} synced")
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": text},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, nio.RoomSendResponse), response
        return str(response.event_id)

    async def start_dm(self, bot_user_id: str) -> str:
        response = await self.client.room_create(
            invite=[bot_user_id],
            is_direct=True,
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        assert isinstance(response, nio.RoomCreateResponse), response
        self.dm_ids.append(str(response.room_id))
        return str(response.room_id)

    def undecryptable(self) -> list[dict[str, Any]]:
        return [e for e in self.seen.events if e.get("type") == "m.room.encrypted"]

    async def renew_room_keys(self, room_ids: Iterable[str]) -> None:
        """Start new Megolm sessions in these rooms, shared with every device known now.

        What Element (Rust crypto) does by itself when a member gets a new device, such
        as the bot after losing its crypto store; nio keeps the session it already
        shared, which the new device can never read.
        """
        await self.sync(0)  # learns the new device (device_lists.changed -> keys/query)
        for room_id in room_ids:
            self.client.invalidate_outbound_session(room_id)
