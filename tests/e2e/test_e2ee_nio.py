"""Encrypted rooms with a matrix-nio person (the js-sdk person's tests are in test_e2ee.py).

A nio client with its own crypto store talks to the bot in encrypted rooms: onboarding
from an encrypted DM, commands, a turn, and the bot's device cross-signed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import onboard
from runtime.matrix.cross_signing import CrossSigningState, cross_signing_state
from runtime.matrix.session import SESSION_FILE
from tests.e2e.harness import EncryptedUser
from tests.e2e.test_platform_http import wait_until

ENCRYPTED = {"SURFACE_ENCRYPT_ROOMS": "true"}


@pytest.fixture
async def encrypted_alice(
    synapse: LocalHomeserver, register: Callable[..., RegisteredUser], tmp_path: Path
) -> AsyncIterator[EncryptedUser]:
    store = tmp_path / "alice-store"
    store.mkdir()
    user = await EncryptedUser.login_encrypted(synapse.base_url, register("alice"), store)
    yield user
    await user.close()


def keys_of(synapse: LocalHomeserver, bot: BotProcess) -> dict[str, Any]:
    r = httpx.post(
        f"{synapse.base_url}/_matrix/client/v3/keys/query",
        json={"device_keys": {bot.bot.user_id: []}},
        headers={"Authorization": f"Bearer {bot.bot.access_token}"},
    )
    r.raise_for_status()
    answer: dict[str, Any] = r.json()
    return answer


def devices_of(synapse: LocalHomeserver, bot: BotProcess) -> set[str]:
    r = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/devices",
        headers={"Authorization": f"Bearer {bot.bot.access_token}"},
    )
    r.raise_for_status()
    return {d["device_id"] for d in r.json()["devices"]}


def bot_device(bot: BotProcess) -> str:
    import json

    return str(json.loads((bot.store_path / "session.json").read_text())["device_id"])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_encrypted_onboarding_commands_and_a_turn(
    make_bot: Callable[..., BotProcess],
    encrypted_alice: EncryptedUser,
    synapse: LocalHomeserver,
    backend: str,
) -> None:
    bot = make_bot(extra_env=ENCRYPTED, backend=backend)
    alice = encrypted_alice

    _space_id, chat_id = await onboard(alice, bot.bot.user_id)
    [dm_id] = alice.dm_ids
    state = await alice.get_state(chat_id)
    assert any(e["type"] == "m.room.encryption" for e in state), "the chat room is encrypted"

    def welcome() -> list[dict[str, Any]]:
        return [m for m in alice.bot_messages(chat_id) if "first chat" in m["content"]["body"]]

    await alice.wait_for(welcome, what="the encrypted welcome")
    assert "Commands" in await alice.ask(chat_id, "!help")
    assert "hello there" in await alice.ask(chat_id, "hello there")
    assert alice.bot_messages(dm_id), "the DM notice arrived, encrypted and readable"
    assert alice.undecryptable() == [], "everything the bot sent was readable"

    device = bot_device(bot)
    assert cross_signing_state(keys_of(synapse, bot), bot.bot.user_id, device) is (
        CrossSigningState.SIGNED
    )


async def test_restart_keeps_the_device_and_reads_on(
    make_bot: Callable[..., BotProcess], encrypted_alice: EncryptedUser, synapse: LocalHomeserver
) -> None:
    bot = make_bot(extra_env=ENCRYPTED)
    alice = encrypted_alice
    _space_id, chat_id = await onboard(alice, bot.bot.user_id)
    assert "one" in await alice.ask(chat_id, "one")
    device = bot_device(bot)

    bot.kill()
    bot.start_ready()

    assert "two" in await alice.ask(chat_id, "two")
    assert bot_device(bot) == device
    assert alice.undecryptable() == []
    # The store recorded the device as signed: the restart did not ask before ready.
    assert '"on_record": true' in bot.log_text()
    assert cross_signing_state(keys_of(synapse, bot), bot.bot.user_id, device) is (
        CrossSigningState.SIGNED
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_lost_store_and_database_new_device_catch_up_and_one_notice(
    make_bot: Callable[..., BotProcess],
    encrypted_alice: EncryptedUser,
    synapse: LocalHomeserver,
    backend: str,
) -> None:
    bot = make_bot(extra_env={**ENCRYPTED, "SURFACE_DECRYPT_GRACE": "2"}, backend=backend)
    alice = encrypted_alice
    _space_id, chat_id = await onboard(alice, bot.bot.user_id)
    first = await alice.send(chat_id, "one")
    await alice.wait_reply(first, expect="one")
    old_device = bot_device(bot)

    bot.kill()
    shutil.rmtree(bot.store_path)
    for path in bot.db_path.parent.glob(bot.db_path.name + "*"):
        path.unlink()
    # Sent to the old device only: the new one can never read it.
    lost = await alice.send(chat_id, "sent while the bot was gone")
    bot.start_ready()

    new_device = bot_device(bot)
    assert new_device != old_device
    await alice.wait_reply(lost, expect="could not read", timeout=60)
    second = await alice.send(chat_id, "two")
    await alice.wait_reply(second, expect="two", timeout=60)

    assert len(alice.replies_to(first)) == 1, "answered before the loss: not again"
    assert len(alice.replies_to(lost)) == 1, "one notice, no more"
    assert old_device not in devices_of(synapse, bot), "the old device was deleted"
    assert cross_signing_state(keys_of(synapse, bot), bot.bot.user_id, new_device) is (
        CrossSigningState.SIGNED
    )
    assert "could not read" in bot.log_text() or "decrypt.failed" in bot.log_text()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_a_revoked_session_keeps_its_device_readable_and_cross_signed(
    make_bot: Callable[..., BotProcess],
    encrypted_alice: EncryptedUser,
    synapse: LocalHomeserver,
    backend: str,
) -> None:
    bot = make_bot(extra_env=ENCRYPTED, backend=backend)
    alice = encrypted_alice
    _space_id, chat_id = await onboard(alice, bot.bot.user_id)
    assert "before" in await alice.ask(chat_id, "before")
    device = bot_device(bot)
    token = json.loads((bot.store_path / SESSION_FILE).read_text())["access_token"]

    async with httpx.AsyncClient() as http:  # logged out: Synapse deletes it and its keys
        response = await http.post(
            f"{synapse.base_url}/_matrix/client/v3/logout",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    response.raise_for_status()
    await wait_until(
        lambda: bot.log_text().count('"bot.starting"') >= 2, timeout=60, what="logged in again"
    )
    await anyio.to_thread.run_sync(bot.wait_ready)

    assert '"e2ee.device_keys_republished"' in bot.log_text()
    assert bot_device(bot) == device
    assert cross_signing_state(keys_of(synapse, bot), bot.bot.user_id, device) is (
        CrossSigningState.SIGNED
    )
    assert "after" in await alice.ask(chat_id, "after", timeout=60)
    assert alice.undecryptable() == []
