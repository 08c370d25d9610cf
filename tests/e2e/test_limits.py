"""Homeserver limits on a real Synapse: the event size limit and a rate-limited bot.

Synapse refuses an event over 65,536 bytes (M_TOO_LARGE) and rate limits a bot
like any user unless exempted; neither may lose any of an answer.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard

Register = Callable[..., RegisteredUser]


def long_text(chars: int) -> str:
    """Paragraphs, a code block and multi-byte characters, `chars` long."""
    paragraph = "Größe matters: ünïcödé, 日本語, and plain words to fill the line. " * 8 + "\n\n"
    code = "```python\n" + "".join(f"print({n})  # ж\n" for n in range(400)) + "```\n\n"
    text = paragraph + code
    while len(text) < chars:
        text += paragraph
    return text[:chars]


def limit_messages(synapse: LocalHomeserver, admin: RegisteredUser, user_id: str) -> None:
    """Rate limit `user_id`'s messages to 1/s (burst 1) through Synapse's admin API.

    The API takes whole numbers only: 1/s is the tightest it can set (0.5/s needs
    `rc_message` in the homeserver's config, which would apply to every user).
    """
    response = httpx.post(
        f"{synapse.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
        json={"messages_per_second": 1, "burst_count": 1},
        headers={"Authorization": f"Bearer {admin.access_token}"},
    )
    response.raise_for_status()


async def test_a_40000_character_answer_arrives_whole(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    text = long_text(40_000)

    asked = await alice.send(chat, text)

    expected = f"echo: {text}"
    try:
        await alice.wait_for(
            lambda: "".join(alice.reply_texts(asked)) == expected,
            timeout=60,
            what="the whole answer",
        )
    except TimeoutError:
        got = [t if len(t) < 300 else len(t) for t in alice.reply_texts(asked)]
        raise AssertionError(f"parts {got} of {len(expected)}\n{bot.log_tail(20)}") from None
    assert len(alice.replies_to(asked)) >= 2
    assert "M_TOO_LARGE" not in bot.log_text()


@pytest.mark.timeout(240)
async def test_a_rate_limited_bot_answers_a_burst_completely_once(
    synapse: LocalHomeserver, register: Register, bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    limit_messages(synapse, register("admin", admin=True), bot.bot.user_id)

    asked = [await alice.send(chat, f"burst {n}") for n in range(20)]

    await alice.wait_for(
        lambda: all(alice.replies_to(e) for e in asked), timeout=150, what="20 answers"
    )
    await alice.ask(chat, "barrier", timeout=60)  # a late duplicate would come before this
    for n, event_id in enumerate(asked):
        assert alice.reply_texts(event_id) == [f"echo: burst {n}"]
    assert "event.crashed" not in bot.log_text()
    # The homeserver did rate limit the bot, and the turn retried its sends itself.
    assert '"operation": "answer.send"' in bot.log_text()
