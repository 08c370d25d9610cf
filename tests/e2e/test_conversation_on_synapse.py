"""Issue 18, items 3 to 6 on a real Synapse: threads, reaction answers, edited questions
(with a restart between the edit and the answer), read receipts."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import nio

from runtime.dev.bot import BotProcess
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import read_receipt as harness_read_receipt

REPLY_TO = "lambda.surface.reply_to"


async def send_content(
    user: UserClient, room_id: str, content: dict[str, Any], event_type: str = "m.room.message"
) -> str:
    response = await user.client.room_send(room_id, event_type, content)
    assert isinstance(response, nio.RoomSendResponse), response
    return str(response.event_id)


def bot_reactions(user: UserClient, target: str) -> list[str]:
    return [
        e["content"]["m.relates_to"]["key"]
        for e in user.seen.events
        if e.get("type") == "m.reaction"
        and e.get("sender") != user.user.user_id
        and e["content"].get("m.relates_to", {}).get("event_id") == target
    ]


async def read_receipt(user: UserClient, room_id: str, reader: str) -> str | None:
    """The event `reader`'s m.read receipt is on, as `user` sees it."""
    headers = {"Authorization": f"Bearer {user.user.access_token}"}
    async with httpx.AsyncClient(
        base_url=user.client.homeserver, headers=headers, trust_env=False
    ) as http:
        return await harness_read_receipt(http, room_id, reader)


async def test_a_question_in_a_thread_is_answered_in_that_thread(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    root = await alice.send(chat, "a topic")
    await alice.wait_reply(root)

    asked = await send_content(
        alice,
        chat,
        {
            "msgtype": "m.text",
            "body": "about the topic",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": root},
            },
        },
    )

    assert await alice.wait_reply(asked) == "echo: about the topic"
    [answer] = alice.replies_to(asked)
    relation = answer["content"]["m.relates_to"]
    assert (relation["rel_type"], relation["event_id"]) == ("m.thread", root)
    assert relation["m.in_reply_to"] == {"event_id": asked}
    # Synapse counts it into the thread: the root's summary has the bot's answer.
    root_event = await alice.client.room_get_event(chat, root)
    assert isinstance(root_event, nio.RoomGetEventResponse), root_event
    thread = root_event.event.source["unsigned"]["m.relations"]["m.thread"]
    assert thread["latest_event"]["event_id"] == answer["event_id"]


async def test_a_yes_reaction_on_the_archive_question_archives(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    asked = await alice.send(chat, "!archive")
    await alice.wait_reply(asked, expect="!yes")
    question = alice.replies_to(asked)[0]["event_id"]
    await alice.wait_for(lambda: len(bot_reactions(alice, question)) == 2, what="✅ and ❌")
    assert bot_reactions(alice, question) == ["✅", "❌"]

    reacted = await send_content(
        alice,
        chat,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": question, "key": "✅"}},
        event_type="m.reaction",
    )

    assert "Archived" in await alice.wait_reply(reacted, expect="Archived")
    marker = next(e for e in await alice.get_state(chat) if e["type"] == "lambda.surface.room")
    assert marker["content"]["archived"] is True


async def test_an_edited_question_is_asked_again_once_across_a_restart(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    asked = await alice.send(chat, "what is 2+2")
    assert await alice.wait_reply(asked) == "echo: what is 2+2"
    answer_id = alice.replies_to(asked)[0]["event_id"]
    bot.stop()

    edited = await send_content(
        alice,
        chat,
        {
            "msgtype": "m.text",
            "body": "* what is 3+3",
            "m.new_content": {"msgtype": "m.text", "body": "what is 3+3"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": asked},
        },
    )
    bot.start_ready()

    await alice.wait_for(
        lambda: alice.current_text(answer_id) == "echo: what is 3+3", what="the edited answer"
    )
    await alice.ask(chat, "after")  # by now a second turn for the edit would show
    assert alice.replies_to(edited) == [], "the answer was edited, no new message"
    finals = [
        e
        for e in alice.bot_messages(chat)
        if e["content"].get(REPLY_TO) == edited
        and e["content"].get("m.relates_to", {}).get("event_id") == answer_id
    ]
    assert len(finals) == 1, "one edit of the answer for the edited question"
    assert bot.log_text().count('"edit.asking_again"') == 1


async def test_the_bot_marks_what_it_took_as_read(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)

    asked = await alice.send(chat, "did you read this?")
    await alice.wait_reply(asked)

    # Sent in the background once the bot is quiet (tasks/room_signals.py).
    with anyio.fail_after(10):
        while True:
            if await read_receipt(alice, chat, bot.bot.user_id) == asked:
                break
            await anyio.sleep(0.1)
