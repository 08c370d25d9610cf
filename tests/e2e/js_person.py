"""A Matrix person on matrix-js-sdk with Rust crypto, the SDK under Element, for e2e tests.

`JsPerson` drives `tests/e2e/jsclient/person.mjs` (a Node child process) over JSON lines:
each call sends one command and awaits the reply with the same id under a deadline. Waiting
for events happens in the driver (it wakes on every new or decrypted event), so nothing here
polls or sleeps. The child is killed on `aclose()`, and exits by itself when its stdin closes.

By default the person is the careful Element user of MSC4153: logged in with its password,
its device cross-signed by itself, in "exclude insecure devices" mode (room keys only go to
devices cross-signed by their owner; events from other devices stay undecryptable).

`ensure_installed()` installs the pinned matrix-js-sdk with `npm ci` when `node_modules` is
missing or older than `package-lock.json` (like `uv sync` installs Synapse); an installed tree
needs no network.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TypedDict, cast

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from runtime.dev.accounts import RegisteredUser

JSCLIENT_DIR = Path(__file__).parent / "jsclient"
DRIVER = JSCLIENT_DIR / "person.mjs"
MIN_NODE_MAJOR = 20  # matrix-js-sdk 36.x; 37+ needs Node 22
_MAX_LINE = 256 * 1024 * 1024
_MARGIN = 10.0  # seconds the Python deadline adds to the driver's own


class JsClientUnavailable(Exception):
    """Node or npm is missing or too old: the driver cannot run on this machine."""


class JsPersonError(Exception):
    """A driver command failed (its message is the driver's error) or the driver died."""


class EventView(TypedDict):
    """An event as the person sees it: decrypted, its `m.replace` edits folded in."""

    event_id: str
    room_id: str
    sender: str
    type: str  # the decrypted type; `m.room.encrypted` only when undecryptable
    state_key: str | None
    encrypted: bool
    undecryptable: bool
    failure: str | None  # DecryptionFailureCode when undecryptable
    msgtype: str | None
    text: str | None  # the body after the latest edit, as Element shows it
    edits: int
    reply_to: str | None  # lambda.surface.reply_to, else m.in_reply_to
    content: dict[str, Any]  # the original (decrypted) content


class Download(TypedDict):
    encrypted: bool
    size: int
    sha256: str
    data_b64: str


class Device(TypedDict):
    device_id: str
    signed: bool  # cross-signed by its owner, as this person sees it


class Undecryptable(TypedDict):
    now: int  # undecryptable at this moment, for any reason (Element: "Unable to decrypt")
    ever: int  # lacked their room key at some point, even if a late key repaired them
    reasons: list[dict[str, str]]


def ensure_installed(directory: Path = JSCLIENT_DIR, *, timeout: float = 600.0) -> Path:
    """Make `directory/node_modules` match its `package-lock.json`; returns `directory`.

    Runs `npm ci` only when node_modules is missing or older than the lock file, so an
    installed tree needs no network. Raises JsClientUnavailable when node or npm is missing
    or node is too old; a failing install raises RuntimeError with npm's output.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise JsClientUnavailable(f"{missing} not found on PATH (install Node.js >= 20)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        raise JsClientUnavailable(f"node {version} is too old (need >= {MIN_NODE_MAJOR})")
    lock = directory / "package-lock.json"
    # npm writes node_modules/.package-lock.json last: it exists only after a full install.
    installed = directory / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return directory
    # pytest-xdist workers may get here at once: one installs, the others wait and see it done.
    with (directory / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
            return directory
        _npm_ci(npm, directory, installed, timeout)
    return directory


def _npm_ci(npm: str, directory: Path, installed: Path, timeout: float) -> None:
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {directory} failed:\n{result.stdout}{result.stderr}")
    installed.touch()  # newer than the lock even if npm kept an old timestamp


class JsPerson:
    """One person (one device) in a Node child process. Use `JsPerson.started(...)`."""

    def __init__(self, process: Process, user: RegisteredUser, log_path: Path) -> None:
        self.user = user
        self.user_id = user.user_id
        self.device_id = ""
        self.cross_signed = False
        self.log_path = log_path
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._reading = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def started(
        cls,
        base_url: str,
        user: RegisteredUser,
        log_path: Path,
        *,
        cross_signing: bool = True,
        only_signed: bool = True,
    ) -> AsyncIterator[JsPerson]:
        """Start the driver, log `user` in (password, new device); killed on exit."""
        node = shutil.which("node")
        if node is None:
            raise JsClientUnavailable("node not found on PATH")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            # The password goes by environment, so no command (or traceback of one) shows it.
            process = await anyio.open_process(
                [node, str(DRIVER)],
                cwd=JSCLIENT_DIR,
                stderr=cast(IO[bytes], log_file),
                env={**os.environ, "JSCLIENT_PASSWORD": user.password},
            )
        person = cls(process, user, log_path)
        try:
            login = await person.call(
                "login",
                timeout=60,
                base_url=base_url,
                user_id=user.user_id,
                cross_signing=cross_signing,
                only_signed=only_signed,
            )
            person.device_id = str(login["device_id"])
            person.cross_signed = bool(login["cross_signed"])
            yield person
        finally:
            await person.aclose()

    async def aclose(self) -> None:
        """Kill the driver and reap it (idempotent)."""
        with anyio.move_on_after(5, shield=True):
            if self._process.returncode is None:
                self._process.kill()
            await self._process.wait()
            await self._process.aclose()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- the protocol --------------------------------------------------------------------------

    async def call(self, cmd: str, *, timeout: float = 30.0, **args: Any) -> Any:
        """Send `cmd` and return its result; JsPersonError if it fails or times out."""
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        try:
            with anyio.fail_after(timeout + _MARGIN):
                await self._stdin.send(line.encode())
                reply = await self._reply(request_id)
        except TimeoutError:
            raise JsPersonError(f"{cmd}: no answer from the driver\n{self.log_tail()}") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
            raise JsPersonError(f"{cmd}: the driver died\n{self.log_tail()}") from None
        if not reply.get("ok"):
            raise JsPersonError(f"{cmd}: {reply.get('error')}")
        return reply.get("result")

    async def _reply(self, request_id: int) -> dict[str, Any]:
        # No reader task: whoever holds the lock reads lines and files every reply by id.
        while request_id not in self._replies:
            async with self._reading:
                if request_id in self._replies:
                    break
                raw = await self._stdout.receive_until(b"\n", _MAX_LINE)
                message = json.loads(raw)
                self._replies[int(message["id"])] = message
        return self._replies.pop(request_id)

    # --- commands ------------------------------------------------------------------------------

    async def create_dm(self, user_id: str, *, encrypted: bool = True) -> str:
        """An is_direct room like Element's (encrypted unless told), `user_id` invited."""
        return str(await self.call("create_dm", user_id=user_id, encrypted=encrypted))

    async def accept_invites(
        self, count: int = 1, *, inviter: str | None = None, timeout: float = 30.0
    ) -> list[str]:
        """Wait for `count` invites not yet joined (from `inviter`), join them, return them."""
        rooms = await self.call(
            "accept_invites", timeout=timeout, count=count, inviter=inviter or None
        )
        return [str(r) for r in rooms]

    async def join(self, room_id: str) -> None:
        await self.call("join", room_id=room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("invite", room_id=room_id, user_id=user_id)

    async def send(
        self,
        room_id: str,
        body: str,
        *,
        msgtype: str = "m.text",
        reply_to: str | None = None,
        replaces: str | None = None,
    ) -> str:
        """Send a text message (encrypted in an encrypted room); returns its event id.

        `reply_to` makes it a reply, `replaces` an `m.replace` edit of that event.
        """
        args: dict[str, Any] = {"room_id": room_id, "body": body, "msgtype": msgtype}
        if reply_to:
            args["reply_to"] = reply_to
        if replaces:
            args["replaces"] = replaces
        return str(await self.call("send_text", **args))

    async def send_file(
        self, room_id: str, name: str, data: bytes, mimetype: str = "application/octet-stream"
    ) -> str:
        """Upload `data` as an encrypted attachment (v2) and post it as m.file."""
        data_b64 = base64.b64encode(data).decode()
        return str(
            await self.call(
                "send_file", room_id=room_id, name=name, data_b64=data_b64, mimetype=mimetype
            )
        )

    async def events(self, **criteria: Any) -> list[EventView]:
        """The events seen so far matching `criteria` (edits are folded into originals).

        Criteria: room_id, sender, not_sender, type, msgtype, reply_to, undecryptable,
        failure (a DecryptionFailureCode), text (exact, after edits), text_contains.
        """
        return cast(list[EventView], await self.call("events", **criteria))

    async def wait(
        self, count: int = 1, *, timeout: float = 30.0, **criteria: Any
    ) -> list[EventView]:
        """Wait until `count` events match `criteria` (see `events`); returns all that do."""
        found = await self.call("wait", timeout=timeout, count=count, **criteria)
        return cast(list[EventView], found)

    async def wait_reply(
        self,
        event_id: str,
        *,
        text: str | None = None,
        contains: str | None = None,
        timeout: float = 30.0,
    ) -> EventView:
        """The first other user's message answering `event_id` (with that final text)."""
        criteria: dict[str, Any] = {"reply_to": event_id, "not_sender": self.user_id}
        if text is not None:
            criteria["text"] = text
        if contains is not None:
            criteria["text_contains"] = contains
        return (await self.wait(timeout=timeout, **criteria))[0]

    async def ask(
        self, room_id: str, body: str, *, contains: str | None = None, timeout: float = 30.0
    ) -> str:
        """Send `body`, wait for the answer (containing `contains`); returns its final text."""
        sent = await self.send(room_id, body)
        reply = await self.wait_reply(sent, contains=contains, timeout=timeout)
        return reply["text"] or ""

    async def replies_to(self, event_id: str) -> list[EventView]:
        """Messages (not edits) by others answering `event_id`."""
        return await self.events(reply_to=event_id, not_sender=self.user_id)

    async def download(self, event_id: str) -> Download:
        """Fetch (and decrypt) the attachment of `event_id`."""
        return cast(Download, await self.call("download", timeout=60, event_id=event_id))

    async def undecryptable(
        self, sender: str | None = None, room_id: str | None = None
    ) -> Undecryptable:
        result = await self.call("undecryptable", sender=sender, room_id=room_id)
        return cast(Undecryptable, result)

    async def joined_rooms(self) -> list[str]:
        return [str(r) for r in await self.call("joined_rooms")]

    async def room_state(self, room_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]], await self.call("room_state", room_id=room_id, type=event_type)
        )

    async def is_encrypted(self, room_id: str) -> bool:
        return bool(await self.call("is_encrypted", room_id=room_id))

    async def hierarchy(self, space_id: str) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self.call("hierarchy", space_id=space_id))

    async def device_signed(self, user_id: str, device_id: str) -> bool:
        """Whether that device is cross-signed by its owner, as this person sees it."""
        return bool(await self.call("device_signed", user_id=user_id, device_id=device_id))

    async def devices(
        self, user_id: str, *, without: str | None = None, signed: int = 0, timeout: float = 30.0
    ) -> list[Device]:
        """`user_id`'s devices once `without` is gone and `signed` of them are cross-signed."""
        found = await self.call(
            "devices", timeout=timeout, user_id=user_id, without=without, signed=signed
        )
        return cast(list[Device], found)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def onboard(person: JsPerson, bot_user_id: str, *, timeout: float = 60.0) -> tuple[str, str]:
    """Open an encrypted DM with the bot, join its Space and chat; returns (space_id, chat_id)."""
    await person.create_dm(bot_user_id)
    rooms = await person.accept_invites(2, inviter=bot_user_id, timeout=timeout)
    space_id = chat_id = ""
    for room_id in rooms:
        types = {e["type"] for e in await person.room_state(room_id)}
        if "lambda.surface.space" in types:
            space_id = room_id
        elif "lambda.surface.room" in types:
            chat_id = room_id
    assert space_id and chat_id, f"invites were {rooms}"
    return space_id, chat_id
