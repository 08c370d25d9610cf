"""Issue 15 acceptance: the bot in encrypted rooms, seen by a person who is not on nio.

Every test here runs on a Synapse that encrypts every new room
(`encryption_enabled_by_default_for_room_type: all`), against the real bot process, with a
person on matrix-js-sdk Rust crypto (tests/e2e/js_person.py): cross-signed, in
"exclude insecure devices" mode (MSC4153), so the bot is answered only if its device is
cross-signed by the bot and it never reads anything it was not given a key for.
The person must never see an undecryptable event from the bot.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import anyio
import httpx
import pytest

from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.matrix.session import SESSION_FILE
from tests.e2e.conftest import MakePerson
from tests.e2e.harness import STREAM_AT_ONCE
from tests.e2e.js_person import JsPerson, onboard, sha256_hex
from tests.e2e.platform_service import PlatformProcess
from tests.e2e.test_platform_http import wait_until

MakeBot = Callable[..., BotProcess]
STORE_ENV = {"MATRIX_STORE_PASSPHRASE": "e2e store passphrase, not a real secret"}
STREAM_TIMEOUT = 10.0  # the http agent's timeout_seconds


@pytest.fixture(scope="session")
def synapse(encrypting_synapse: LocalHomeserver) -> LocalHomeserver:
    """Every bot, person and user of this module lives on the server that encrypts all rooms."""
    return encrypting_synapse


@pytest.fixture
def bot(make_bot: MakeBot) -> BotProcess:
    """The bot with the in-process echo agent and a store passphrase."""
    return make_bot(extra_env=STORE_ENV)


@pytest.fixture
async def person(make_person: MakePerson) -> JsPerson:
    """A cross-signed person in only-signed-devices mode (the default of make_person)."""
    return await make_person("alice")


async def assert_nothing_undecryptable_from(person: JsPerson, bot: BotProcess) -> None:
    seen = await person.undecryptable(sender=bot.bot.user_id)
    assert seen["ever"] == 0 and seen["now"] == 0, f"{seen}\n{bot.log_tail(30)}"


# -- onboarding and commands ---------------------------------------------------------------------


@pytest.mark.parametrize("encrypt_rooms", ["true", "false"])
async def test_onboarding_in_an_encrypted_dm_and_commands_in_encrypted_rooms(
    make_bot: MakeBot, person: JsPerson, encrypt_rooms: str
) -> None:
    # With SURFACE_ENCRYPT_ROOMS=false the server still forces encryption: same result.
    bot = make_bot(extra_env={**STORE_ENV, "SURFACE_ENCRYPT_ROOMS": encrypt_rooms})
    bot_id = bot.bot.user_id

    dm = await person.create_dm(bot_id)
    [notice] = await person.wait(room_id=dm, sender=bot_id, type="m.room.message", timeout=60)
    assert notice["encrypted"] and not notice["undecryptable"], notice
    assert "Space" in (notice["text"] or "")

    rooms = await person.accept_invites(2, inviter=bot_id, timeout=60)
    space_id = chat = ""
    for room_id in rooms:
        types = {e["type"] for e in await person.room_state(room_id)}
        space_id = room_id if "lambda.surface.space" in types else space_id
        chat = room_id if "lambda.surface.room" in types else chat
    assert space_id and chat, rooms
    assert await person.is_encrypted(chat) and await person.is_encrypted(space_id)
    [welcome] = await person.wait(room_id=chat, sender=bot_id, text_contains="!help", timeout=60)
    assert welcome["encrypted"] and not welcome["undecryptable"]

    # State stays in the clear: the Space lists the chat, and `!chats` knows it.
    children = await person.room_state(space_id, "m.space.child")
    assert chat in {e["state_key"] for e in children}
    assert chat in {r["room_id"] for r in await person.hierarchy(space_id)}
    chats = await person.ask(chat, "!chats", contains="C1")
    assert "C1" in chats
    created = await person.ask(chat, "!new Second", contains="Second")
    assert "C2" in created
    [second] = await person.accept_invites(inviter=bot_id)
    assert await person.is_encrypted(second)
    assert await person.ask(second, "hello there") == "echo: hello there"

    bot_devices = await person.devices(bot_id, signed=1)
    assert bot_devices and all(d["signed"] for d in bot_devices), bot_devices
    await assert_nothing_undecryptable_from(person, bot)


# -- a turn with streamed edits ------------------------------------------------------------------


async def test_streamed_turn_is_edited_to_the_full_text_in_an_encrypted_room(
    make_bot: MakeBot, platform: PlatformProcess, person: JsPerson, tmp_path: Path
) -> None:
    registry = tmp_path / "agents.yaml"
    registry.write_text(
        "agents:\n"
        + platform.registry_entry(
            "ref", name="Reference", default=True, timeout_seconds=STREAM_TIMEOUT
        )
        + "\n"
    )
    bot = make_bot(registry=registry, extra_env={**STORE_ENV, **STREAM_AT_ONCE})
    _, chat = await onboard(person, bot.bot.user_id)
    text = "tell me a long story !stream 0.7"

    trigger = await person.send(chat, text)
    reply = await person.wait_reply(trigger, text=f"echo: {text}", timeout=STREAM_TIMEOUT + 30)

    assert reply["encrypted"] and reply["edits"] >= 1, reply
    assert reply["content"]["body"] != f"echo: {text}"  # posted before the answer was whole
    assert len(await person.replies_to(trigger)) == 1
    await assert_nothing_undecryptable_from(person, bot)


# -- files both ways -----------------------------------------------------------------------------


async def test_encrypted_files_reach_the_agent_and_come_back_encrypted(
    bot: BotProcess, person: JsPerson
) -> None:
    _, chat = await onboard(person, bot.bot.user_id)
    data = b"quarterly numbers\n" * 200

    upload = await person.send_file(chat, "report.txt", data, "text/plain")
    await person.wait_reply(upload, contains="report.txt")
    reply = await person.ask(chat, "summarise the file", contains="attachments")
    [path] = [
        p.strip()
        for line in reply.splitlines()
        if line.startswith("attachments:")
        for p in line.removeprefix("attachments:").split(",")
    ]
    assert not PurePosixPath(path).is_absolute()
    received = (bot.workdir / "workspace" / path).read_bytes()
    assert sha256_hex(received) == sha256_hex(data)

    trigger = await person.send(chat, "make me a file !emit notes.txt")
    [file_event] = await person.wait(reply_to=trigger, msgtype="m.file", timeout=60)
    assert file_event["encrypted"] and "file" in file_event["content"], file_event
    assert "url" not in file_event["content"]  # the media repository holds only ciphertext
    got = await person.download(file_event["event_id"])
    emitted = (bot.workdir / "workspace" / "agent-out" / "notes.txt").read_bytes()
    assert got["encrypted"] and got["sha256"] == hashlib.sha256(emitted).hexdigest()
    await assert_nothing_undecryptable_from(person, bot)


# -- crashes and lost state ----------------------------------------------------------------------


@pytest.mark.timeout(360)
async def test_two_sigkills_during_traffic_answer_every_message_exactly_once(
    bot: BotProcess, person: JsPerson
) -> None:
    _, chat = await onboard(person, bot.bot.user_id)
    sent: dict[str, str] = {}  # event id -> text

    async def send(text: str) -> None:
        sent[await person.send(chat, text)] = text

    for kill in range(2):
        await anyio.to_thread.run_sync(bot.wait_ready)
        for n in range(4):
            await send(f"kill {kill} message {n}")
        bot.kill()  # while it decrypts and answers the burst
        await send(f"kill {kill}: sent while the bot is down")
        bot.start()
    await anyio.to_thread.run_sync(bot.wait_ready)

    for event_id, text in sent.items():
        await person.wait_reply(event_id, text=f"echo: {text}", timeout=120)
    await person.ask(chat, "final barrier")  # a late duplicate would show up before this
    answers = {event_id: len(await person.replies_to(event_id)) for event_id in sent}
    assert all(count == 1 for count in answers.values()), answers
    await assert_nothing_undecryptable_from(person, bot)


async def test_lost_crypto_store_logs_in_as_a_new_cross_signed_device(
    bot: BotProcess, person: JsPerson
) -> None:
    bot_id = bot.bot.user_id
    _, chat = await onboard(person, bot_id)
    assert await person.ask(chat, "before the loss") == "echo: before the loss"
    [old] = await person.devices(bot_id, signed=1)

    bot.kill()
    shutil.rmtree(bot.store_path)
    while_down = await person.send(chat, "sent while the store was lost")
    bot.start()
    await anyio.to_thread.run_sync(bot.wait_ready)

    # The old device is deleted and the new one is cross-signed, so the person shares keys.
    [new] = await person.devices(bot_id, without=old["device_id"], signed=1)
    assert new["device_id"] != old["device_id"] and new["signed"]
    assert await person.ask(chat, "after the loss") == "echo: after the loss"
    # The message sent while the bot was down is answered once; it was encrypted for the
    # old device only, so the bot may answer it with the "please send it again" notice.
    await person.wait_reply(while_down, timeout=60)
    assert len(await person.replies_to(while_down)) == 1
    await assert_nothing_undecryptable_from(person, bot)


async def test_a_revoked_session_ends_with_a_working_cross_signed_device(
    bot: BotProcess, person: JsPerson
) -> None:
    """The bot's device is logged out (deleting its keys): the bot logs in again and reads on."""
    bot_id = bot.bot.user_id
    _, chat = await onboard(person, bot_id)
    assert await person.ask(chat, "before the logout") == "echo: before the logout"
    [old] = await person.devices(bot_id, signed=1)
    session = json.loads((bot.store_path / SESSION_FILE).read_text())

    async with httpx.AsyncClient() as http:  # an admin or the owner logs the device out
        response = await http.post(
            f"{bot.synapse.base_url}/_matrix/client/v3/logout",
            headers={"Authorization": f"Bearer {session['access_token']}"},
            timeout=10,
        )
    response.raise_for_status()
    await wait_until(
        lambda: bot.log_text().count('"bot.starting"') >= 2, timeout=60, what="logged in again"
    )
    await anyio.to_thread.run_sync(bot.wait_ready)
    assert '"matrix.session_lost"' in bot.log_text()

    # The person sees one cross-signed device of the bot again and is answered in the clear.
    [device] = await person.devices(bot_id, signed=1, timeout=60)
    assert device["signed"] and device["device_id"] == old["device_id"], (device, old)
    for n in range(3):
        assert await person.ask(chat, f"after the logout {n}", timeout=60) == (
            f"echo: after the logout {n}"
        )
    assert bot.is_running()
    assert len(await person.devices(bot_id)) == 1, "no dead device left for clients to encrypt to"
    await assert_nothing_undecryptable_from(person, bot)
