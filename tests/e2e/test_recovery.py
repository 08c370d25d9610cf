"""Loss of local state: Matrix is the record; nothing is lost, nothing answered twice."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import binding, chat_at_a_forked_tip, joined_rooms, surface_cli


def _wipe_database(bot: BotProcess) -> None:
    for path in bot.db_path.parent.glob(bot.db_path.name + "*"):
        path.unlink()


@pytest.mark.parametrize("lose_store", [False, True], ids=["db", "db+nio-store"])
async def test_lost_database_is_rebuilt_from_matrix(
    synapse: LocalHomeserver, bot: BotProcess, alice: UserClient, lose_store: bool
) -> None:
    _, c1 = await onboard(alice, bot.bot.user_id)
    await alice.ask(c1, "!new Two", expect="Two")
    [c2] = await alice.accept_invites()
    await alice.ask(c2, "!agent echo", expect="Echo")
    first = await alice.send(c1, "answered before the loss")
    await alice.wait_reply(first)
    before_c1 = binding(await alice.ask(c1, "!context", expect="platform chat"))
    before_c2 = binding(await alice.ask(c2, "!context", expect="platform chat"))
    rooms_before = joined_rooms(synapse, bot.bot)

    bot.kill()
    _wipe_database(bot)
    if lose_store:
        shutil.rmtree(bot.store_path)
    unanswered = await alice.send(c2, "sent while the bot had lost everything")
    bot.start_ready()

    assert await alice.wait_reply(unanswered) == "echo: sent while the bot had lost everything"
    assert binding(await alice.ask(c1, "!context", expect="platform chat")) == before_c1
    assert binding(await alice.ask(c2, "!context", expect="platform chat")) == before_c2
    chats = await alice.ask(c1, "!chats", expect="C2")
    assert "C1" in chats and "C2 — Two" in chats
    created = await alice.ask(c1, "!new", expect="C3")
    assert "C3" in created
    [c3] = await alice.accept_invites()
    c3_context = binding(await alice.ask(c3, "!context", expect="platform chat"))
    used = {before_c1["platform chat"], before_c2["platform chat"]}
    assert c3_context["platform chat"] not in used
    assert int(c3_context["platform chat"]) > max(int(x) for x in used)
    assert "Renamed" in await alice.ask(c2, "!rename Renamed", expect="Renamed")
    await alice.ask(c2, "!archive", expect="!yes")
    assert "Archived" in await alice.ask(c2, "!yes", expect="Archived")
    # Exactly the one room `!new` made is new; nothing answered twice.
    assert joined_rooms(synapse, bot.bot) - rooms_before == {c3}
    assert len(alice.replies_to(first)) == 1
    assert len(alice.replies_to(unanswered)) == 1
    # With the session kept, the catch-up sync was asked before the imports, and used.
    assert ('"snapshot.prefetched"' in bot.log_text()) == (not lose_store)
    assert '"snapshot.prefetch_unused"' not in bot.log_text()


async def test_partial_loss_of_chat_records_is_repaired(bot: BotProcess, alice: UserClient) -> None:
    _, c1 = await onboard(alice, bot.bot.user_id)
    await alice.ask(c1, "!new Second", expect="Second")
    bot.stop()
    with sqlite3.connect(bot.db_path) as db:
        db.execute("DELETE FROM chats")

    report = json.loads(surface_cli(bot, "reconcile").stdout)

    assert report["chats_restored"] == 2
    bot.start_ready()
    chats = await alice.ask(c1, "!chats", expect="C2")
    assert "C1" in chats and "C2 — Second" in chats


async def test_disagreeing_local_record_loses_to_matrix(bot: BotProcess, alice: UserClient) -> None:
    _, c1 = await onboard(alice, bot.bot.user_id)
    before = binding(await alice.ask(c1, "!context", expect="platform chat"))
    bot.stop()
    with sqlite3.connect(bot.db_path) as db:
        db.execute(
            "UPDATE rooms SET platform_chat_id = '999', agent_id = 'bogus' WHERE room_id = ?", (c1,)
        )

    dry = surface_cli(bot, "reconcile", "--dry-run")
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["repaired"] >= 1
    reasons = [c["reason"] for c in report["conflicts"] if c["room_id"] == c1]
    assert any("platform_chat_id" in r and "agent_id" in r for r in reasons), report
    with sqlite3.connect(bot.db_path) as db:  # dry run changed nothing
        row = db.execute("SELECT platform_chat_id FROM rooms WHERE room_id = ?", (c1,)).fetchone()
    assert row == ("999",)

    bot.start_ready()
    assert binding(await alice.ask(c1, "!context", expect="platform chat")) == before


async def test_reconcile_twice_changes_nothing_the_second_time(
    bot: BotProcess, alice: UserClient
) -> None:
    _, c1 = await onboard(alice, bot.bot.user_id)
    await alice.ask(c1, "!new", expect="C2")
    bot.stop()
    _wipe_database(bot)

    first = json.loads(surface_cli(bot, "reconcile").stdout)
    second = json.loads(surface_cli(bot, "reconcile").stdout)

    assert first["rooms_restored"] == 3 and first["users_restored"] == 1
    assert first["changes"] > 0
    assert second["changes"] == 0 and second["conflicts"] == []


async def test_reset_dry_run_touches_nothing_and_reset_forgets_everything(
    synapse: LocalHomeserver, bot: BotProcess, alice: UserClient
) -> None:
    await onboard(alice, bot.bot.user_id)
    bot.stop()
    rooms = joined_rooms(synapse, bot.bot)

    dry = surface_cli(bot, "reset", "--mode", "server-leave-forget", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout and "leave" in dry.stdout
    assert bot.db_path.exists() and bot.store_path.exists()
    assert joined_rooms(synapse, bot.bot) == rooms

    refused = surface_cli(bot, "reset", "--mode", "local-only")  # no terminal, no --yes
    assert refused.returncode == 2 and bot.db_path.exists()

    done = surface_cli(bot, "reset", "--mode", "server-leave-forget", "--yes")
    assert done.returncode == 0, done.stderr
    assert "What people must still do" in done.stdout
    assert not bot.db_path.exists() and not bot.store_path.exists()
    assert joined_rooms(synapse, bot.bot) == set()


async def test_reconcile_sees_state_written_while_the_user_was_acting(
    bot: BotProcess, alice: UserClient
) -> None:
    chat, context = await chat_at_a_forked_tip(alice, bot)
    bot.stop()

    report = json.loads(surface_cli(bot, "reconcile", "--dry-run").stdout)

    assert report["conflicts"] == [] and report["changes"] == 0, report
    bot.start_ready()
    assert binding(await alice.ask(chat, "!context", expect="platform chat")) == context
