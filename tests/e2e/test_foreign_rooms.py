"""The bot on a real Synapse in rooms that are not a user's chats, for users taken off
the allow list, and for users who left their rooms (issue 14 items 3, 7, 12)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

import nio

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import handled

NOT_ALLOWED = "no longer on this bot's allow list"


def recorded(bot: BotProcess, event_ids: Iterable[str]) -> set[str]:
    wanted = list(event_ids)
    with sqlite3.connect(f"file:{bot.db_path}?mode=ro", uri=True) as db:
        rows = db.execute(
            f"SELECT event_id FROM ledger WHERE event_id IN ({','.join('?' * len(wanted))})",
            wanted,
        ).fetchall()
    return {row[0] for row in rows}


async def test_a_group_room_with_history_gets_at_most_one_message_from_the_bot(
    bot: BotProcess,
    alice: UserClient,
    synapse: LocalHomeserver,
    register: Callable[..., RegisteredUser],
) -> None:
    await onboard(alice, bot.bot.user_id)
    bob = await UserClient.login(synapse.base_url, register("bob"))
    try:
        created = await alice.client.room_create(name="Team", invite=[bob.user.user_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        group = str(created.room_id)
        await bob.join(group)
        history = [
            await (alice if n % 2 else bob).send(group, f"earlier message {n}") for n in range(30)
        ]
        invited = await alice.client.room_invite(group, bot.bot.user_id)
        assert isinstance(invited, nio.RoomInviteResponse), invited
        await alice.wait_for(
            lambda: any(
                e.get("type") == "m.room.member"
                and e.get("state_key") == bot.bot.user_id
                and e["content"].get("membership") == "join"
                for e in alice.seen.events
                if e["room_id"] == group
            ),
            what="the bot joins the group room",
        )

        later = [
            await alice.send(group, "hello bot?"),
            await bob.send(group, "is it listening?"),
            await alice.send(group, "!help"),
        ]
        await alice.wait_for(lambda: handled(bot, later), what="the later messages handled")

        from_bot = [m for m in alice.bot_messages(group) if m["sender"] == bot.bot.user_id]
        assert len(from_bot) <= 1, from_bot
        assert recorded(bot, history) == set(), "messages from before the join were recorded"
    finally:
        await bob.close()


async def test_a_user_taken_off_the_allow_list_at_a_restart_gets_one_notice_and_no_answers(
    bot: BotProcess, alice: UserClient, register: Callable[..., RegisteredUser]
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    assert await alice.ask(chat, "hello") == "echo: hello"

    bot.stop()
    bot.env["SURFACE_ALLOWED_USERS"] = register("someone-else").user_id
    bot.start_ready()
    asked = [
        await alice.send(chat, "still there?"),
        await alice.send(chat, "!new"),
        await alice.send(chat, "hello?"),
    ]
    await alice.wait_for(lambda: handled(bot, asked), what="the messages handled")
    bot.stop()
    bot.start_ready()
    after_restart = await alice.send(chat, "and now?")
    await alice.wait_for(lambda: handled(bot, [after_restart]), what="handled after restart")
    await alice.sync(0)

    answers = [r for event_id in [*asked, after_restart] for r in alice.replies_to(event_id)]
    assert len(answers) == 1, answers
    assert NOT_ALLOWED in answers[0]["content"]["body"]
    assert answers[0]["content"]["lambda.surface.reply_to"] == asked[0]


async def test_chats_invites_a_user_back_to_a_room_they_left(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "!new Side", expect="Side")
    [side] = await alice.accept_invites(1)
    left = await alice.client.room_leave(side)
    assert isinstance(left, nio.RoomLeaveResponse), left
    del alice.seen.invites[side]  # the first invite, used

    listing = await alice.ask(chat, "!chats", expect="Side")

    assert "C2 — Side (you left)" in listing
    assert "invited you back" in listing
    await alice.wait_for(lambda: side in alice.seen.invites, what="the invite back")
    await alice.join(side)
    assert await alice.ask(side, "back again") == "echo: back again"
