"""Driving the real bot process and a real Matrix user in e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import nio

from runtime.dev_homeserver import LocalHomeserver, RegisteredUser, find_free_port

REPLY_TO = "lambda.surface.reply_to"
REPO = Path(__file__).resolve().parents[2]


# The test user must see every event: a limited timeline would hide replies.
TEST_FILTER = {"room": {"timeline": {"limit": 1000}}}


class BotDied(Exception):
    pass


class BotProcess:
    """`surface run` as a real child process against the test Synapse."""

    def __init__(
        self,
        synapse: LocalHomeserver,
        bot: RegisteredUser,
        workdir: Path,
        *,
        registry: Path | None = None,
        backend: str = "asyncio",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.synapse = synapse
        self.bot = bot
        self.workdir = workdir
        self.backend = backend
        self.port = find_free_port("127.0.0.1")
        self.db_path = workdir / "db" / "lambda_matrix.db"
        self.store_path = workdir / "matrix_store"
        self.log_path = workdir / "bot.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MATRIX_", "SURFACE_"))},
            "MATRIX_HOMESERVER": synapse.base_url,
            "MATRIX_USER_ID": bot.user_id,
            "MATRIX_PASSWORD": bot.password,
            "MATRIX_DB_PATH": str(self.db_path),
            "MATRIX_STORE_PATH": str(self.store_path),
            "SURFACE_WORKSPACE_DIR": str(workdir / "workspace"),
            "SURFACE_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "SURFACE_LOG_FORMAT": "json",
            "SURFACE_LOG_LEVEL": "info",
            "SURFACE_ALLOWED_USERS": f"@*:{synapse.server_name}",
            "SURFACE_STREAM_EDIT_INTERVAL": "0.2",
            # The nio test users here have no crypto: plain rooms unless a test asks
            # (extra_env SURFACE_ENCRYPT_ROOMS=true; test_e2ee*.py).
            "SURFACE_ENCRYPT_ROOMS": "false",
            "PYTHONUNBUFFERED": "1",
        }
        if registry is not None:
            self.env["SURFACE_AGENT_REGISTRY"] = str(registry)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli", "run", "--backend", self.backend],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BotDied(f"bot exited ({self.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"bot not ready after {timeout}s:\n{self.log_tail()}")

    def start_ready(self) -> None:
        self.start()
        self.wait_ready()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (graceful)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Seen:
    events: list[dict[str, Any]] = field(default_factory=list)  # with "room_id" added
    invites: dict[str, str] = field(default_factory=dict)  # room id -> inviter


class UserClient:
    """A Matrix user driven by a test, with everything it has seen."""

    def __init__(self, client: nio.AsyncClient, user: RegisteredUser) -> None:
        self.client = client
        self.user = user
        self.seen = Seen()
        self._since: str | None = None
        self._joined: set[str] = set()
        self._synced_rooms: set[str] = set()

    @classmethod
    async def login(cls, base_url: str, user: RegisteredUser) -> UserClient:
        client = nio.AsyncClient(base_url, user.user_id)
        client.restore_login(user.user_id, user.device_id, user.access_token)
        me = cls(client, user)
        await me.sync(0)
        return me

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 1000) -> None:
        response = await self.client.sync(
            timeout=timeout_ms, since=self._since, sync_filter=TEST_FILTER
        )
        if not isinstance(response, nio.SyncResponse):
            raise RuntimeError(f"sync failed: {response}")
        for room_id, room in response.rooms.join.items():
            if room_id in self._synced_rooms and room.timeline.limited:
                raise AssertionError(f"test client missed events in {room_id}: raise the limit")
            self._synced_rooms.add(room_id)
        self._since = response.next_batch
        for room_id, room in response.rooms.join.items():
            for event in room.timeline.events:
                self.seen.events.append({**event.source, "room_id": room_id})
        for room_id, room in response.rooms.invite.items():
            for event in room.invite_state:
                source = getattr(event, "source", {})
                if (
                    source.get("type") == "m.room.member"
                    and source.get("state_key") == self.user.user_id
                ):
                    self.seen.invites[room_id] = source.get("sender", "")

    async def wait_for(
        self, predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
    ) -> Any:
        with anyio.fail_after(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                await self.sync(500)
        raise AssertionError(what)  # pragma: no cover

    async def start_dm(self, bot_user_id: str) -> str:
        response = await self.client.room_create(invite=[bot_user_id], is_direct=True)
        assert isinstance(response, nio.RoomCreateResponse), response
        return str(response.room_id)

    async def join(self, room_id: str) -> None:
        response = await self.client.join(room_id)
        assert isinstance(response, nio.JoinResponse), response
        self._joined.add(room_id)

    async def accept_invites(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Wait until `count` new invites arrived, join them; returns their room ids."""
        joined = self._joined

        def pending() -> list[str] | None:
            rooms = [r for r in self.seen.invites if r not in joined]
            return rooms if len(rooms) >= count else None

        rooms: list[str] = await self.wait_for(pending, timeout=timeout, what="invites")
        for room_id in rooms:
            await self.join(room_id)
        return rooms

    async def send(self, room_id: str, text: str) -> str:
        response = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text}
        )
        assert isinstance(response, nio.RoomSendResponse), response
        return str(response.event_id)

    def bot_messages(self, room_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.seen.events
            if e.get("type") == "m.room.message"
            and e.get("sender") != self.user.user_id
            and (room_id is None or e["room_id"] == room_id)
        ]

    def replies_to(self, event_id: str) -> list[dict[str, Any]]:
        """Bot messages (not edits) answering `event_id`."""
        return [
            e
            for e in self.bot_messages()
            if e["content"].get(REPLY_TO) == event_id
            and e["content"].get("m.relates_to", {}).get("rel_type") != "m.replace"
        ]

    def current_text(self, message_event_id: str) -> str:
        """The message's text after its latest edit."""
        text = ""
        for e in self.seen.events:
            content = e.get("content", {})
            if e.get("event_id") == message_event_id:
                text = content.get("body", "")
            relates = content.get("m.relates_to", {})
            if (
                relates.get("rel_type") == "m.replace"
                and relates.get("event_id") == message_event_id
            ):
                text = content.get("m.new_content", {}).get("body", text)
        return text

    def reply_texts(self, event_id: str) -> list[str]:
        return [self.current_text(e["event_id"]) for e in self.replies_to(event_id)]

    async def ask(
        self, room_id: str, text: str, *, expect: str | None = None, timeout: float = 30.0
    ) -> str:
        """Send `text`, wait for the bot's reply (containing `expect`), return the reply text."""
        event_id = await self.send(room_id, text)
        return await self.wait_reply(event_id, expect=expect, timeout=timeout)

    async def wait_reply(
        self, event_id: str, *, expect: str | None = None, timeout: float = 30.0
    ) -> str:
        def done() -> str | None:
            for reply in self.reply_texts(event_id):
                if expect is None or expect in reply:
                    return reply
            return None

        result: str = await self.wait_for(done, timeout=timeout, what=f"reply to {event_id}")
        return result

    def room_state_of(self, room_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e for e in self.seen.events if e["room_id"] == room_id and e.get("type") == event_type
        ]

    async def get_state(self, room_id: str) -> list[dict[str, Any]]:
        response = await self.client.room_get_state(room_id)
        assert isinstance(response, nio.RoomGetStateResponse), response
        return list(response.events)

    async def hierarchy(self, space_id: str) -> list[dict[str, Any]]:
        url = f"{self.client.homeserver}/_matrix/client/v1/rooms/{space_id}/hierarchy"
        async with httpx.AsyncClient() as http:
            r = await http.get(url, headers={"Authorization": f"Bearer {self.user.access_token}"})
        r.raise_for_status()
        rooms: list[dict[str, Any]] = r.json()["rooms"]
        return rooms


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
        client = self.client
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        await client.send_to_device_messages()

    async def send(self, room_id: str, text: str) -> str:
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


async def onboard(user: UserClient, bot_user_id: str, *, timeout: float = 60.0) -> tuple[str, str]:
    """Invite the bot to a DM, accept the Space and chat invites; returns (space_id, chat_id)."""
    await user.start_dm(bot_user_id)

    def invited() -> dict[str, str] | None:
        found = {r: s for r, s in user.seen.invites.items() if s == bot_user_id}
        return found if len(found) >= 2 else None

    invites = await user.wait_for(invited, timeout=timeout, what="Space and chat invites")
    space_id = chat_id = ""
    for room_id in invites:
        await user.join(room_id)
    await user.sync(0)
    for room_id in invites:
        state = await user.get_state(room_id)
        types = {e["type"] for e in state}
        if "lambda.surface.space" in types:
            space_id = room_id
        elif "lambda.surface.room" in types:
            chat_id = room_id
    assert space_id and chat_id, f"invites were {invites}"
    return space_id, chat_id


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
