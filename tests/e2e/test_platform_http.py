"""The bot and the reference platform-agent as real processes, on a real Synapse.

The registry has two agents: `ref`, the platform-agent over HTTP (wire v1, the
default), and `echo`, the in-process mock, so a room can keep working while
the platform is down. The platform keeps the memory; tests read it both
through `!context` and from the service itself.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import pairwise
from pathlib import Path

import anyio
import httpx
import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import STREAM_AT_ONCE
from tests.e2e.platform_service import PlatformProcess

Register = Callable[..., RegisteredUser]

AGENT = "ref"
TIMEOUT = 10.0  # the http agent's timeout_seconds


def write_registry(path: Path, platform: PlatformProcess, *, timeout: float = TIMEOUT) -> Path:
    path.write_text(
        "agents:\n"
        + platform.registry_entry(AGENT, name="Reference", default=True, timeout_seconds=timeout)
        + "\n  - {id: echo, name: Echo, backend: mock}\n"
    )
    return path


def start_bot(
    synapse: LocalHomeserver,
    register: Register,
    tmp_path: Path,
    platform: PlatformProcess,
    *,
    timeout: float = TIMEOUT,
    backend: str = "asyncio",
    extra_env: dict[str, str] | None = None,
) -> BotProcess:
    registry = write_registry(tmp_path / "agents.yaml", platform, timeout=timeout)
    process = BotProcess(
        synapse,
        register("bot"),
        tmp_path / "bot",
        registry=registry,
        backend=backend,
        extra_env={**STREAM_AT_ONCE, **(extra_env or {})},
    )
    process.start_ready()
    return process


@pytest.fixture
def bot(
    synapse: LocalHomeserver, register: Register, tmp_path: Path, platform: PlatformProcess
) -> Iterator[BotProcess]:
    process = start_bot(synapse, register, tmp_path, platform)
    yield process
    process.kill()


@pytest.fixture
async def alice(synapse: LocalHomeserver, register: Register) -> AsyncIterator[UserClient]:
    user = await UserClient.login(synapse.base_url, register("alice"))
    yield user
    await user.close()


# -- reading the bot's answers ---------------------------------------------------------------


async def context_of(user: UserClient, room: str) -> tuple[str, int]:
    """(platform_chat_id, turns the platform reports) from `!context` in `room`."""
    text = await user.ask(room, "!context", expect="platform chat")
    chat = re.search(r"platform chat: (\S+)", text)
    turns = re.search(r"turns: (\d+)", text)
    assert chat and turns, f"cannot read !context: {text!r}"
    return chat.group(1), int(turns.group(1))


async def new_chat(user: UserClient, room: str, name: str) -> str:
    """`!new name` in `room`; joins the new chat and returns its room id."""
    await user.ask(room, f"!new {name}", expect=name)
    [joined] = await user.accept_invites(1)
    return joined


def bot_metric(bot: BotProcess, name: str, **labels: str) -> float:
    """One sample of the bot's /metrics (0 when absent)."""
    text = httpx.get(bot.url + "/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


async def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `condition` (blocking: it runs in a thread) until it holds; fails naming `what`."""
    deadline = anyio.current_time() + timeout
    while not await anyio.to_thread.run_sync(condition):
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await anyio.sleep(0.05)


# -- streaming -------------------------------------------------------------------------------


async def test_turn_streams_into_one_message_edited_to_the_full_text(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    text = "tell me a long story !stream 0.7"

    trigger = await alice.send(chat, text)
    await alice.wait_reply(trigger, expect=f"echo: {text}", timeout=TIMEOUT + 20)

    [message] = alice.replies_to(trigger)
    edits = [
        e
        for e in alice.bot_messages(chat)
        if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"]["event_id"] == message["event_id"]
    ]
    shown = [message["content"]["body"]] + [e["content"]["m.new_content"]["body"] for e in edits]
    assert shown[0] != f"echo: {text}"  # posted before the answer was whole
    assert shown[-1] == f"echo: {text}"  # the final edit is complete
    assert all(f"echo: {text}".startswith(part) for part in shown)
    assert all(len(a) < len(b) for a, b in pairwise(shown))
    assert edits[-1]["content"]["m.new_content"]["format"] == "org.matrix.custom.html"


# -- context commands ------------------------------------------------------------------------


async def test_clear_changes_only_this_rooms_context(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    _, first = await onboard(alice, bot.bot.user_id)
    second = await new_chat(alice, first, "Second")
    await alice.ask(first, "one", expect="echo: one")
    await alice.ask(first, "two", expect="echo: two")
    await alice.ask(second, "three", expect="echo: three")
    old_first, turns = await context_of(alice, first)
    assert turns == 2
    kept_second, turns = await context_of(alice, second)
    assert turns == 1

    await alice.ask(first, "!clear", expect="!yes")
    cleared = await alice.ask(first, "!yes", expect="Cleared")

    new_first, turns = await context_of(alice, first)
    assert new_first != old_first
    assert turns == 0
    assert new_first in cleared
    assert await context_of(alice, second) == (kept_second, 1)
    # The platform was told: the old chat's session is gone, the other room's is not.
    assert platform.context(AGENT, old_first).details["session"] == "idle"
    assert platform.context(AGENT, kept_second).details["session"] == "live"
    assert await alice.ask(second, "still there?") == "echo: still there?"
    assert await context_of(alice, second) == (kept_second, 2)


async def test_save_and_load_restore_a_context(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "remember the red door", expect="red door")
    await alice.ask(chat, "and the blue key", expect="blue key")
    assert "2 turns" in await alice.ask(chat, "!save keys", expect="Saved")
    await alice.ask(chat, "a third thing", expect="third")
    assert (await context_of(alice, chat))[1] == 3

    listing = await alice.ask(chat, "!load", expect="1.")
    assert "keys" in listing and "2 turns" in listing
    assert "2 turns" in await alice.ask(chat, "1", expect="Loaded")
    assert (await context_of(alice, chat))[1] == 2

    # A cleared chat is a new platform chat; the snapshot loads into it too.
    await alice.ask(chat, "!clear", expect="!yes")
    await alice.ask(chat, "!yes", expect="Cleared")
    assert (await context_of(alice, chat))[1] == 0
    await alice.ask(chat, "!load", expect="1.")
    await alice.ask(chat, "1", expect="Loaded")
    platform_chat, turns = await context_of(alice, chat)
    assert turns == 2
    assert platform.context(AGENT, platform_chat).turns == 2


# -- the platform goes away ------------------------------------------------------------------


async def test_platform_down_gives_a_clear_message_and_other_rooms_keep_working(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    _, on_ref = await onboard(alice, bot.bot.user_id)
    on_echo = await new_chat(alice, on_ref, "Mock")
    assert "Echo" in await alice.ask(on_echo, "!agent echo", expect="Echo")
    await alice.ask(on_ref, "before", expect="echo: before")

    platform.stop()
    started = anyio.current_time()
    failing = await alice.send(on_ref, "anyone there?")
    served = await alice.send(on_echo, "and here?")

    error = await alice.wait_reply(failing, expect="could not answer", timeout=TIMEOUT + 10)
    took = anyio.current_time() - started
    # The user gets the code and a reference; the detail (with the address) is in the log.
    assert "`unavailable`, ref `" in error and "127.0.0.1" not in error
    assert "is the platform running" in bot.log_text()
    assert took < TIMEOUT, f"the user waited {took:.1f}s for the error"
    assert await alice.wait_reply(served) == "echo: and here?"
    [answer] = alice.replies_to(served)
    [complaint] = alice.replies_to(failing)
    # The other room did not wait for the failing one's retries.
    assert answer["origin_server_ts"] < complaint["origin_server_ts"]
    assert bot_metric(bot, "surface_platform_errors_total", code="unavailable") == 1

    platform.start_healthy()
    assert await alice.ask(on_ref, "back?", timeout=TIMEOUT + 10) == "echo: back?"
    # The platform's memory outlived it; the failed turn was never recorded.
    assert (await context_of(alice, on_ref))[1] == 2
    assert bot.returncode is None


async def test_hung_platform_answers_with_a_timeout_message(
    synapse: LocalHomeserver,
    register: Register,
    tmp_path: Path,
    platform: PlatformProcess,
    alice: UserClient,
) -> None:
    timeout = 3.0
    bot = start_bot(synapse, register, tmp_path, platform, timeout=timeout)
    try:
        _, chat = await onboard(alice, bot.bot.user_id)
        await alice.ask(chat, "before", expect="echo: before")

        platform.freeze()
        started = anyio.current_time()
        error = await alice.ask(chat, "hello?", expect="could not answer", timeout=timeout + 15)
        took = anyio.current_time() - started

        assert "`timeout`, ref `" in error and "127.0.0.1" not in error
        assert f"did not answer within {timeout:g} s" in bot.log_text()
        assert took < timeout + 5, f"the user waited {took:.1f}s for a {timeout}s timeout"
        assert bot_metric(bot, "surface_platform_errors_total", code="timeout") == 1
        platform.resume()
        assert await alice.ask(chat, "awake?", timeout=timeout + 15) == "echo: awake?"
    finally:
        platform.resume()
        bot.kill()


# -- crashes during a turn -------------------------------------------------------------------


async def slow_turn_on_the_platform(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient, text: str
) -> tuple[str, str, str]:
    """Alice onboards and asks `text` (a `!slow` turn); returns (chat, platform chat,
    trigger) once the turn is live on the platform."""
    _, chat = await onboard(alice, bot.bot.user_id)
    platform_chat, _ = await context_of(alice, chat)
    trigger = await alice.send(chat, text)
    await wait_until(
        lambda: platform.context(AGENT, platform_chat).details["session"] == "live",
        timeout=30,
        what="the turn reached the platform",
    )
    return chat, platform_chat, trigger


async def test_turn_in_flight_when_the_bot_is_killed_is_answered_once(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    text = "think hard !slow 2"
    chat, platform_chat, trigger = await slow_turn_on_the_platform(bot, platform, alice, text)
    bot.kill()
    bot.start_ready()

    # The answer may first show in part (an edit flush can fall between its deltas).
    await alice.wait_reply(trigger, expect=f"echo: {text}", timeout=TIMEOUT + 20)
    await alice.ask(chat, "after", expect="echo: after")  # a duplicate would be here by now
    assert alice.reply_texts(trigger) == [f"echo: {text}"]
    assert platform.context(AGENT, platform_chat).turns == 2
    assert (await context_of(alice, chat))[1] == 2


async def test_sigterm_mid_turn_lets_the_answer_finish_and_the_agent_runs_it_once(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    text = "think hard !slow 3"
    chat, platform_chat, trigger = await slow_turn_on_the_platform(bot, platform, alice, text)
    # Two SIGTERMs at once, as a process-group kill through `uv run` delivers them:
    # one graceful stop, not a forced one.
    bot.send_signal(signal.SIGTERM)
    bot.send_signal(signal.SIGTERM)
    assert bot.proc is not None
    status = await anyio.to_thread.run_sync(bot.proc.wait, 40)

    assert status == 0, bot.log_tail()
    await alice.wait_reply(trigger, expect=f"echo: {text}", timeout=10)  # sent before the exit
    assert platform.context(AGENT, platform_chat).turns == 1
    bot.start_ready()
    await alice.ask(chat, "after", expect="echo: after")  # a replay would be answered by now
    assert alice.reply_texts(trigger) == [f"echo: {text}"]
    assert platform.context(AGENT, platform_chat).turns == 2
    assert platform.log_events("turn.replayed") == []
    assert '"supervisor.shutdown_forced"' not in bot.log_text()


async def test_turn_the_platform_finished_before_the_crash_is_replayed_not_redone(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    text = "think hard !slow 1"
    chat, platform_chat, trigger = await slow_turn_on_the_platform(bot, platform, alice, text)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGSTOP)  # the bot hangs, its socket stays open
    await wait_until(
        lambda: platform.context(AGENT, platform_chat).turns == 1,
        timeout=30,
        what="the platform recorded the turn",
    )
    bot.kill()  # before it could post the answer
    assert alice.replies_to(trigger) == []
    bot.start_ready()

    assert await alice.wait_reply(trigger, timeout=TIMEOUT + 20) == f"echo: {text}"
    await alice.ask(chat, "after", expect="echo: after")
    assert len(alice.replies_to(trigger)) == 1
    assert platform.context(AGENT, platform_chat).turns == 2
    replayed = platform.log_events("turn.replayed")
    assert [e["idempotency_key"] for e in replayed] == [trigger]


async def test_crash_mid_stream_leaves_one_message_with_the_complete_text(
    bot: BotProcess, platform: PlatformProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    platform_chat, _ = await context_of(alice, chat)
    text = "a streamed answer !stream 1.5"

    trigger = await alice.send(chat, text)
    await alice.wait_for(lambda: alice.replies_to(trigger), what="the first part of the answer")
    bot.kill()
    bot.start_ready()

    await alice.wait_reply(trigger, expect=f"echo: {text}", timeout=TIMEOUT + 20)
    await alice.ask(chat, "after", expect="echo: after")
    assert alice.reply_texts(trigger) == [f"echo: {text}"]
    assert platform.context(AGENT, platform_chat).turns == 2


async def test_graceful_stop_mid_turn_under_trio_closes_cleanly_and_answers_after_restart(
    synapse: LocalHomeserver,
    register: Register,
    tmp_path: Path,
    platform: PlatformProcess,
    alice: UserClient,
) -> None:
    bot = start_bot(
        synapse,
        register,
        tmp_path,
        platform,
        backend="trio",
        extra_env={"PYTHONWARNINGS": "default"},
    )
    try:
        _, chat = await onboard(alice, bot.bot.user_id)
        text = "slowly now !stream 2"
        trigger = await alice.send(chat, text)
        await alice.wait_for(lambda: alice.replies_to(trigger), what="the first part")

        assert bot.stop() == 0, bot.log_tail()
        log = bot.log_text()
        assert "garbage collected before it had been exhausted" not in log
        assert "Traceback" not in log, bot.log_tail()
        bot.start_ready()

        await alice.wait_reply(trigger, expect=f"echo: {text}", timeout=TIMEOUT + 20)
        await alice.ask(chat, "after", expect="echo: after")
        assert alice.reply_texts(trigger) == [f"echo: {text}"]
    finally:
        bot.kill()
