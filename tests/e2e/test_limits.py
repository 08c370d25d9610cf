"""Homeserver limits on a real Synapse: the event size limit and a rate-limited bot.

Synapse refuses an event over 65,536 bytes (M_TOO_LARGE) and rate limits a bot
like any user unless exempted; neither may lose any of an answer. Streamed answers
come from the reference platform-agent (`!stream <seconds> [<pieces>]` in the text:
a pause between its deltas; never at the start of a message, where `!` makes it a
command).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import STREAM_AT_ONCE, override_ratelimit
from tests.e2e.platform_service import PlatformProcess

Register = Callable[..., RegisteredUser]


def long_text(chars: int) -> str:
    """Paragraphs, a code block and multi-byte characters, `chars` long."""
    paragraph = "Größe matters: ünïcödé, 日本語, and plain words to fill the line. " * 8 + "\n\n"
    code = "```python\n" + "".join(f"print({n})  # ж\n" for n in range(400)) + "```\n\n"
    text = paragraph + code
    while len(text) < chars:
        text += paragraph
    return text[:chars]


async def whole_answer(
    alice: UserClient, asked: str, expected: str, *, timeout: float, logs: Callable[[], str]
) -> None:
    """Until the parts of the answer to `asked` join to `expected`; else fails with the
    parts' lengths and `logs()`."""
    try:
        await alice.wait_for(
            lambda: "".join(alice.reply_texts(asked)) == expected,
            timeout=timeout,
            what="the whole answer",
        )
    except TimeoutError:
        got = [t if len(t) < 300 else len(t) for t in alice.reply_texts(asked)]
        raise AssertionError(f"parts {got} of {len(expected)}\n{logs()}") from None


async def test_a_40000_character_answer_arrives_whole(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    text = long_text(40_000)

    asked = await alice.send(chat, text)

    expected = f"echo: {text}"
    await whole_answer(alice, asked, expected, timeout=60, logs=lambda: bot.log_tail(20))
    assert len(alice.replies_to(asked)) >= 2
    assert "M_TOO_LARGE" not in bot.log_text()


def shown_texts(user: UserClient, message: dict[str, Any]) -> list[str]:
    """What `message` showed, in order: its own body, then each edit's."""
    edits = [
        e["content"]["m.new_content"]["body"]
        for e in user.bot_messages(message["room_id"])
        if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"]["event_id"] == message["event_id"]
    ]
    return [message["content"]["body"], *edits]


def reference_bot(
    synapse: LocalHomeserver, account: RegisteredUser, platform: PlatformProcess, workdir: Path
) -> BotProcess:
    """A bot (not started) whose only agent is the reference platform-agent."""
    registry = workdir / "agents.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    registry.write_text(
        "agents:\n" + platform.registry_entry("ref", default=True, timeout_seconds=30) + "\n"
    )
    return BotProcess(
        synapse, account, workdir / "bot", registry=registry, extra_env=STREAM_AT_ONCE
    )


@pytest.mark.timeout(180)
async def test_a_streamed_40000_character_answer_arrives_whole(
    synapse: LocalHomeserver,
    register: Register,
    platform: PlatformProcess,
    alice: UserClient,
    tmp_path: Path,
) -> None:
    bot = reference_bot(synapse, register("bot"), platform, tmp_path)
    try:
        bot.start_ready()
        _, chat = await onboard(alice, bot.bot.user_id)
        text = long_text(40_000 - 16) + " !stream 0.2 40"

        asked = await alice.send(chat, text)

        expected = f"echo: {text}"
        await whole_answer(
            alice,
            asked,
            expected,
            timeout=90,
            logs=lambda: f"{bot.log_tail(20)}\n{platform.log_tail(10)}",
        )
        replies = alice.replies_to(asked)
        assert len(replies) >= 2
        # Streamed: the first part was posted before it was whole, and edited to it.
        first = shown_texts(alice, replies[0])
        assert len(first[0]) < len(first[-1]), [len(t) for t in first]
        assert expected.startswith(first[0])
        assert "M_TOO_LARGE" not in bot.log_text()
    finally:
        bot.kill()


@pytest.fixture
async def limited_users(
    limited_synapse: LocalHomeserver,
) -> AsyncIterator[tuple[RegisteredUser, RegisteredUser, UserClient]]:
    """(admin, bot account, alice logged in) on the limited Synapse; alice is exempt."""

    def account(prefix: str, *, admin: bool = False) -> RegisteredUser:
        name = f"{prefix}-{secrets.token_hex(4)}"
        return limited_synapse.register_user(name, secrets.token_urlsafe(16), admin=admin)

    admin, bot, alice = account("admin", admin=True), account("bot"), account("alice")
    override_ratelimit(limited_synapse, admin, alice.user_id, per_second=0)
    user = await UserClient.login(limited_synapse.base_url, alice)
    yield admin, bot, user
    await user.close()


@pytest.mark.timeout(360)
async def test_a_bot_limited_to_half_a_message_a_second_streams_a_burst_completely_once(
    limited_synapse: LocalHomeserver,
    limited_users: tuple[RegisteredUser, RegisteredUser, UserClient],
    platform: PlatformProcess,
    tmp_path: Path,
) -> None:
    """The acceptance of issue 14: the homeserver limits the bot to 0.5 messages/s."""
    admin, account, alice = limited_users
    bot = reference_bot(limited_synapse, account, platform, tmp_path)
    # Set up while the bot is exempt; then the homeserver's 0.5/s applies to it.
    override_ratelimit(limited_synapse, admin, account.user_id, per_second=0)
    try:
        bot.start_ready()
        _, c1 = await onboard(alice, bot.bot.user_id)
        await alice.ask(c1, "!new", expect="C2")
        [c2] = await alice.accept_invites(1)
        override_ratelimit(limited_synapse, admin, account.user_id, per_second=None)

        # Two rooms: their turns run at once and compete for the bot's rate.
        texts = [f"burst {n} !stream 1" for n in range(20)]
        asked = [await alice.send((c1, c2)[n % 2], text) for n, text in enumerate(texts)]

        def complete() -> bool:
            return all(
                alice.reply_texts(e) == [f"echo: {t}"] for e, t in zip(asked, texts, strict=True)
            )

        try:
            await alice.wait_for(complete, timeout=240, what="20 complete answers")
        except TimeoutError:
            got = {n: alice.reply_texts(e) for n, e in enumerate(asked)}
            raise AssertionError(f"answers {got}\n{bot.log_tail(20)}") from None
        await alice.ask(c1, "barrier", timeout=60)  # a late duplicate would come before this
        for event_id, text in zip(asked, texts, strict=True):
            [reply] = alice.replies_to(event_id)
            shown = shown_texts(alice, reply)
            # Streamed: posted with part of the answer, edited to the whole of it.
            assert len(shown) >= 2 and shown[0] != shown[-1] == f"echo: {text}", shown
        log = bot.log_text()
        assert "event.crashed" not in log
        # The homeserver did rate limit the bot, and the turn retried its sends itself.
        assert '"operation": "answer.send"' in log
    finally:
        bot.kill()
