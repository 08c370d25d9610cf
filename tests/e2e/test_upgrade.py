"""Upgrading from the old surface: its rooms (no markers) and key-value database are kept.

The old bot's rooms are made with the bot's own account, as the old bot made them: a
Space and chat rooms, linked with `m.space.child`, the user invited and joined, no
`lambda.surface.*` markers; its `lambda_matrix.db` (the key-value layout of seed 000)
lies where the new bot looks for its database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nio
import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from runtime.legacy_db import backup_path
from tests.e2e.harness import binding, joined_rooms, room_state_as, surface_cli, upload_file
from tests.legacy_fixtures import alice_rows, write_legacy_db

MakeBot = Callable[..., BotProcess]
TWO_AGENTS = (
    "agents:\n"
    "  - {id: alpha, name: Alpha, backend: mock, default: true}\n"
    "  - {id: beta, name: Beta, backend: mock}\n"
)


async def _old_bot_rooms(
    synapse: LocalHomeserver, bot: RegisteredUser, alice: UserClient, names: list[str]
) -> tuple[str, list[str]]:
    """Space + chat rooms created through the bot's own account, no markers."""
    old = await UserClient.login(synapse.base_url, bot)
    try:
        client = old.client
        made = await client.room_create(
            name="Lambda — alice", space=True, invite=[alice.user.user_id]
        )
        assert isinstance(made, nio.RoomCreateResponse), made
        space = str(made.room_id)
        rooms = []
        for name in names:
            made = await client.room_create(name=name, invite=[alice.user.user_id])
            assert isinstance(made, nio.RoomCreateResponse), made
            room = str(made.room_id)
            put = await client.room_put_state(
                space, "m.space.child", {"via": [synapse.server_name]}, state_key=room
            )
            assert isinstance(put, nio.RoomPutStateResponse), put
            rooms.append(room)
    finally:
        await old.close()
    for room in [space, *rooms]:
        await alice.join(room)
    return space, rooms


def _reconcile_reports(bot: BotProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in bot.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "reconcile.done"]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(TWO_AGENTS)
    return path


async def test_an_old_deployment_keeps_every_room_and_id(
    synapse: LocalHomeserver,
    register: Callable[..., RegisteredUser],
    alice: UserClient,
    registry: Path,
    tmp_path: Path,
) -> None:
    account = register("bot")
    space, (c1, c2, c3) = await _old_bot_rooms(
        synapse, account, alice, ["Чат 1", "Research", "Чат 3"]
    )
    bot = BotProcess(synapse, account, tmp_path / "bot", registry=registry)
    old_ids = {c1: ("C1", "Чат 1", "7"), c2: ("C2", "Research", "19"), c3: ("C3", "Чат 3", "42")}
    write_legacy_db(
        bot.db_path,
        {
            **alice_rows(alice.user.user_id, space, old_ids, seq=42, selected="beta"),
            "auth_state:@alice:example.org": {"step": "done"},  # the old code's, not ours
        },
    )
    rooms_before = joined_rooms(synapse, account)
    try:
        dry = json.loads(surface_cli(bot, "reconcile", "--dry-run").stdout)
        assert dry["adopted"] == 4 and dry["migrated"] > 0 and dry["ids_filled"] == 0
        assert not backup_path(bot.db_path).exists()  # the dry run migrated a copy

        bot.start_ready()

        for room, (chat_id, name, platform_chat_id) in old_ids.items():
            context = binding(await alice.ask(room, "!context", expect="platform chat"))
            assert context == {
                "chat": f"{chat_id} — {name}",
                "agent": "**Beta** (`beta`)",
                "platform chat": platform_chat_id,
            }
            assert await alice.ask(room, f"hello {name}") == f"echo: hello {name}"
        assert joined_rooms(synapse, account) == rooms_before  # no room, no Space created
        for room in (c1, c2, c3):
            types = {e["type"] for e in room_state_as(synapse, account, room)}
            assert {"lambda.surface.room", "m.space.parent"} <= types
        assert "lambda.surface.space" in {e["type"] for e in room_state_as(synapse, account, space)}
        assert backup_path(bot.db_path).exists()
        [first] = _reconcile_reports(bot)
        print("upgrade reconcile report:", json.dumps(first, ensure_ascii=False))
        assert first["adopted"] == 4 and first["migrated"] == 1 + 3 + 3
        assert first["links_repaired"] == 3  # the old bot wrote no m.space.parent
        assert any("auth_state" in u for u in first["unmapped"])
        assert first["conflicts"] == []

        bot.stop()
        bot.start_ready()
        second = _reconcile_reports(bot)[-1]
        assert second["changes"] == 0 and second["adopted"] == 0 and second["migrated"] == 0
        assert (
            binding(await alice.ask(c3, "!context", expect="platform chat"))["platform chat"]
            == "42"
        )
        created = await alice.ask(c1, "!new", expect="C4")
        assert "Beta" in created  # the user's selected agent survived the upgrade
        [c4] = await alice.accept_invites()
        assert (
            int(binding(await alice.ask(c4, "!context", expect="platform"))["platform chat"]) > 42
        )
        assert joined_rooms(synapse, account) - rooms_before == {c4}
    finally:
        bot.kill()


async def test_a_non_default_selected_agent_survives_a_restart(
    make_bot: MakeBot, alice: UserClient, registry: Path
) -> None:
    bot = make_bot(registry=registry)
    _, chat = await onboard(alice, bot.bot.user_id)
    assert "Beta" in await alice.ask(chat, "!agent beta", expect="Beta")

    bot.kill()
    bot.start_ready()

    assert "`beta`" in binding(await alice.ask(chat, "!context", expect="platform"))["agent"]
    assert "Beta" in await alice.ask(chat, "!new", expect="C2")
    [c2] = await alice.accept_invites()
    assert "`beta`" in binding(await alice.ask(c2, "!context", expect="platform"))["agent"]


async def test_a_pending_load_and_staged_files_are_lost_on_restart_harmlessly(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "remember this", expect="remember this")
    await alice.ask(chat, "!save first", expect="Saved")
    await alice.ask(chat, "!load", expect="1.")  # a pending choice
    upload = await upload_file(alice, chat, "notes.txt", b"staged, never sent\n")
    await alice.wait_reply(upload, expect="notes")  # staged for the next message
    # One room's events are handled in order: once this command is answered, the upload
    # is marked handled and will not be replayed (which would stage it again).
    await alice.ask(chat, "!chats", expect="C1")

    bot.kill()
    bot.start_ready()

    assert await alice.ask(chat, "1") == "echo: 1"  # no longer a `!load` answer
    assert "attachments" not in await alice.ask(chat, "anything staged?")
    assert "Saved" in await alice.ask(chat, "!save second", expect="Saved")
