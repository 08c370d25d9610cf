"""The bot on a real Synapse: onboarding, commands, routing, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from runtime.dev_homeserver import LocalHomeserver, RegisteredUser
from tests.e2e.harness import BotProcess, UserClient, onboard

Register = Callable[..., RegisteredUser]


@pytest.fixture
def bot(synapse: LocalHomeserver, register: Register, tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess(synapse, register("bot"), tmp_path / "bot")
    process.start_ready()
    yield process
    process.kill()


@pytest.fixture
async def alice(synapse: LocalHomeserver, register: Register) -> AsyncIterator[UserClient]:
    user = await UserClient.login(synapse.base_url, register("alice"))
    yield user
    await user.close()


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
