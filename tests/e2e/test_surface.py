"""The bot on a real Synapse: onboarding, commands, routing, restarts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx

from runtime.dev.bot import BotProcess
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import binding, handled

MakeBot = Callable[..., BotProcess]


async def test_onboarding_builds_space_and_first_chat(bot: BotProcess, alice: UserClient) -> None:
    space_id, chat_id = await onboard(alice, bot.bot.user_id)

    children = await alice.hierarchy(space_id)
    assert chat_id in {room["room_id"] for room in children}
    state = await alice.get_state(chat_id)
    parent = [e for e in state if e["type"] == "m.space.parent"]
    assert parent and parent[0]["state_key"] == space_id and parent[0]["content"]["via"]
    marker = next(e for e in state if e["type"] == "lambda.surface.room")
    assert marker["sender"] == bot.bot.user_id
    assert marker["content"]["chat_id"] == "C1"
    assert marker["content"]["agent_id"] == "echo"
    assert marker["content"]["platform_chat_id"]
    welcome = await alice.wait_for(lambda: alice.bot_messages(chat_id), what="welcome")
    assert "!help" in welcome[0]["content"]["body"]


async def test_message_is_answered_by_the_agent(bot: BotProcess, alice: UserClient) -> None:
    _, chat_id = await onboard(alice, bot.bot.user_id)

    event_id = await alice.send(chat_id, "hello **world**")
    reply = await alice.wait_reply(event_id, expect="hello **world**")

    assert reply == "echo: hello **world**"
    message = alice.replies_to(event_id)[0]
    assert message["content"]["format"] == "org.matrix.custom.html"
    assert "<strong>world</strong>" in message["content"]["formatted_body"]


async def test_second_invite_creates_no_second_space(bot: BotProcess, alice: UserClient) -> None:
    space_id, _ = await onboard(alice, bot.bot.user_id)
    before = set(alice.seen.invites)

    dm = await alice.start_dm(bot.bot.user_id)
    answer = await alice.wait_for(lambda: alice.bot_messages(dm), what="answer in the 2nd DM")

    assert "Space" in answer[0]["content"]["body"]
    spaces_invited = [
        room for room in set(alice.seen.invites) - before if room != dm and room != space_id
    ]
    assert spaces_invited == []
    chats = await alice.ask((await _chat_of(alice, space_id)), "!chats", expect="C1")
    assert "C2" not in chats


async def _chat_of(user: UserClient, space_id: str) -> str:
    rooms = await user.hierarchy(space_id)
    return next(str(r["room_id"]) for r in rooms if r["room_id"] != space_id)


async def test_every_command_answers(bot: BotProcess, alice: UserClient) -> None:
    space_id, chat = await onboard(alice, bot.bot.user_id)

    assert "!new" in await alice.ask(chat, "!help", expect="Commands")
    assert "Unknown command" in await alice.ask(chat, "!frobnicate")
    assert "Usage" in await alice.ask(chat, "!rename")
    assert "echo" in await alice.ask(chat, "!agents", expect="echo")
    assert "Echo" in await alice.ask(chat, "!agent", expect="Echo")
    assert "no agent" in await alice.ask(chat, "!agent nosuch", expect="no agent")
    assert "Renamed" in await alice.ask(chat, "!rename Research", expect="Research")
    context = await alice.ask(chat, "!context", expect="platform chat")
    assert "Research" in context and "echo" in context

    created = await alice.ask(chat, "!new Ideas", expect="Ideas")
    assert "C2" in created
    chats = await alice.ask(chat, "!chats", expect="C2")
    assert "C1 — Research" in chats and "C2 — Ideas" in chats
    hierarchy = {r["room_id"] for r in await alice.hierarchy(space_id)}
    assert len(hierarchy) == 3  # the Space and two chats

    await alice.ask(chat, "remember this", expect="remember this")
    assert "Saved" in await alice.ask(chat, "!save first", expect="Saved")
    listing = await alice.ask(chat, "!load", expect="1.")
    assert "first" in listing
    assert "Loaded" in await alice.ask(chat, "1", expect="Loaded")

    assert "Clear" in await alice.ask(chat, "!clear", expect="!yes")
    assert "Cancelled" in await alice.ask(chat, "!no", expect="Cancelled")
    old_context = await alice.ask(chat, "!context", expect="platform chat")
    await alice.ask(chat, "!clear", expect="!yes")
    cleared = await alice.ask(chat, "!yes", expect="Cleared")
    new_context = await alice.ask(chat, "!context", expect="platform chat")
    assert _platform_chat(old_context) != _platform_chat(new_context)
    assert _platform_chat(new_context) in cleared

    assert "nothing to confirm" in await alice.ask(chat, "!yes", expect="nothing")
    await alice.ask(chat, "!archive", expect="!yes")
    assert "Archived" in await alice.ask(chat, "!yes", expect="Archived")
    assert "archived" in await alice.ask(chat, "hello?", expect="archived")


def _platform_chat(context: str) -> str:
    line = next(ln for ln in context.splitlines() if "platform chat" in ln)
    return line.rsplit(":", 1)[1].strip()


async def test_restart_keeps_bindings_and_routing(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "!new Second", expect="Second")
    before = binding(await alice.ask(chat, "!context", expect="platform chat"))

    bot.stop()  # SIGTERM: graceful
    assert bot.returncode == 0, bot.log_tail()
    bot.start_ready()
    assert binding(await alice.ask(chat, "!context", expect="platform chat")) == before
    assert await alice.ask(chat, "after sigterm") == "echo: after sigterm"

    bot.kill()  # SIGKILL: no cleanup at all
    bot.start_ready()
    assert binding(await alice.ask(chat, "!context", expect="platform chat")) == before
    assert await alice.ask(chat, "after kill") == "echo: after kill"
    assert "C3" in await alice.ask(chat, "!new", expect="C3")
    # Both restarts asked reconciliation's sync before the imports and used the answer.
    log = bot.log_text()
    assert log.count('"snapshot.prefetched"') == 2, bot.log_tail()
    assert '"snapshot.prefetch_unused"' not in log


async def test_pending_confirmation_lost_on_restart_does_not_break_chat(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    asked = await alice.send(chat, "!clear")
    await alice.wait_reply(asked, expect="!yes")
    # Killed before `!clear` is marked done (its reactions and receipt come after the
    # question), the bot would replay it after the restart and ask again.
    await alice.wait_for(lambda: handled(bot, [asked]), what="the !clear handled")

    bot.kill()
    bot.start_ready()

    assert "nothing to confirm" in await alice.ask(chat, "!yes", expect="nothing")
    assert await alice.ask(chat, "still here?") == "echo: still here?"


async def test_message_sent_while_down_is_answered_once(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "before")
    bot.stop()

    while_down = await alice.send(chat, "while you were out")
    bot.start_ready()

    assert await alice.wait_reply(while_down) == "echo: while you were out"
    await alice.ask(chat, "after")  # by now a duplicate would have arrived
    assert len(alice.replies_to(while_down)) == 1


async def test_agent_removed_from_registry_prompts_reselection(
    make_bot: MakeBot, alice: UserClient, tmp_path: Path
) -> None:
    registry = tmp_path / "agents.yaml"
    registry.write_text(
        "agents:\n"
        "  - {id: alpha, name: Alpha, backend: mock, default: true}\n"
        "  - {id: beta, name: Beta, backend: mock}\n"
    )
    bot = make_bot(registry=registry)
    _, chat = await onboard(alice, bot.bot.user_id)
    assert "Alpha" in await alice.ask(chat, "!agent", expect="Alpha")
    bot.stop()
    registry.write_text("agents:\n  - {id: beta, name: Beta, backend: mock, default: true}\n")
    bot.start_ready()

    prompt = await alice.ask(chat, "hello", expect="!agents")
    assert "alpha" in prompt and "no longer available" in prompt
    assert "Beta" in await alice.ask(chat, "!agent beta", expect="Beta")
    assert await alice.ask(chat, "hello again") == "echo: hello again"


async def test_trio_backend_answers_also_after_a_restart(
    make_bot: MakeBot, alice: UserClient
) -> None:
    bot = make_bot(backend="trio")
    _, chat = await onboard(alice, bot.bot.user_id)
    assert await alice.ask(chat, "under trio") == "echo: under trio"

    bot.stop()
    bot.start_ready()

    assert await alice.ask(chat, "trio again") == "echo: trio again"
    assert '"backend": "trio"' in bot.log_text()
    assert '"snapshot.prefetched"' in bot.log_text()


async def test_health_answers_while_another_process_holds_the_database_write_lock(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    other = sqlite3.connect(bot.db_path, isolation_level=None)
    latencies: list[float] = []
    try:
        other.execute("BEGIN IMMEDIATE")  # a backup, a sqlite3 shell, `surface reconcile`
        trigger = await alice.send(chat, "while the database is locked")
        async with httpx.AsyncClient(timeout=30) as http:
            while "ledger.record_batch" not in bot.log_text() or len(latencies) < 20:
                started = time.monotonic()
                assert (await http.get(bot.url + "/health")).status_code == 200
                latencies.append(time.monotonic() - started)
                await anyio.sleep(0.05)
        assert alice.replies_to(trigger) == []
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert await alice.wait_reply(trigger) == "echo: while the database is locked"
    print(f"/health under a held write lock: max {max(latencies) * 1000:.0f} ms")
