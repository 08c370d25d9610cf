"""The fullstack stack in real containers: onboarding through Synapse, then restarts.

Every test talks to the bot only as a Matrix user would (matrix-nio with end-to-end
encryption against the published Synapse port: the stack's bot encrypts its rooms) and
drives the containers with `docker compose`. Each test uses
its own registered user (deploy/fullstack/users.env), so tests do not depend on each
other's rooms, while all share one stack.
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from runtime.dev.user import onboard
from tests.e2e.compose.stack import Stack, login
from tests.e2e.harness import EncryptedUser

pytestmark = [pytest.mark.compose, pytest.mark.timeout(420)]

T = TypeVar("T")
Connect = Callable[[str], Awaitable[EncryptedUser]]
TIMELINE_FILTER = {"room": {"timeline": {"limit": 200}}}


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (docker compose, a login) without stalling the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


@pytest.fixture
async def connect(stack: Stack, tmp_path: Path) -> AsyncIterator[Connect]:
    """`await connect("alice")`: a logged-in test user with its own crypto store."""
    clients: list[EncryptedUser] = []

    async def connect_user(localpart: str) -> EncryptedUser:
        store = tmp_path / f"{localpart}-store"
        store.mkdir()
        registered = await blocking(login, stack, localpart)
        user = await EncryptedUser.login_encrypted(stack.synapse_url(), registered, store)
        # While a container restarts the user does not sync, and the next /sync batch can
        # hold more than Synapse's default 10 timeline events: the older ones (replies)
        # would be cut off as a "limited" gap and look lost.
        user.client.sync = functools.partial(user.client.sync, sync_filter=TIMELINE_FILTER)
        clients.append(user)
        return user

    yield connect_user
    for client in clients:
        await client.close()


def platform_chat(context: str) -> str:
    """The platform chat id line of a `!context` answer."""
    line = next(ln for ln in context.splitlines() if "platform chat" in ln)
    return line.rsplit(":", 1)[1].strip()


async def test_onboarding_through_synapse_creates_space_and_chat(
    stack: Stack, connect: Connect
) -> None:
    alice = await connect("alice")

    space_id, chat_id = await onboard(alice, stack.bot_user_id)

    space_state = await alice.get_state(space_id)
    names = [e["content"].get("name", "") for e in space_state if e["type"] == "m.room.name"]
    assert names, "the Space has no name"
    assert names[0].startswith("Lambda")
    create = next(e for e in space_state if e["type"] == "m.room.create")
    assert create["content"].get("type") == "m.space"
    assert chat_id in {room["room_id"] for room in await alice.hierarchy(space_id)}
    assert "hello" in await alice.ask(chat_id, "hello", expect="hello", timeout=60)


async def test_compose_restart_of_the_bot_keeps_bindings_and_routing(
    stack: Stack, connect: Connect
) -> None:
    bob = await connect("bob")
    _, chat = await onboard(bob, stack.bot_user_id)
    before = await bob.ask(chat, "!context", expect="platform chat")

    started = time.monotonic()
    await blocking(stack.compose.run, "restart", "bot")
    await blocking(stack.compose.wait_healthy, "bot")
    print(f"\nbot restart -> healthy: {time.monotonic() - started:.1f} s")

    assert await bob.ask(chat, "!context", expect="platform chat", timeout=60) == before
    assert "after restart" in await bob.ask(chat, "after restart", expect="after restart")


async def test_down_and_up_keeping_volumes_answers_in_the_same_room(
    stack: Stack, connect: Connect
) -> None:
    carol = await connect("carol")
    _, chat = await onboard(carol, stack.bot_user_id)
    before = await carol.ask(chat, "!context", expect="platform chat")

    started = time.monotonic()
    await blocking(stack.compose.run, "down", "--timeout", "30")  # volumes stay
    await blocking(stack.compose.up)
    print(f"\ndown + up -> every service healthy: {time.monotonic() - started:.1f} s")
    # Recreated containers publish Synapse on a new loopback port.
    carol.client.homeserver = stack.synapse_url()

    assert await carol.ask(chat, "!context", expect="platform chat", timeout=60) == before
    assert "after down" in await carol.ask(chat, "after down and up", expect="after down")


async def test_lost_bot_volumes_are_rebuilt_from_matrix_without_new_rooms(
    stack: Stack, connect: Connect
) -> None:
    dave = await connect("dave")
    space_id, c1 = await onboard(dave, stack.bot_user_id)
    await dave.ask(c1, "!new Second", expect="Second")
    (c2,) = await dave.accept_invites(1)
    contexts = {c: await dave.ask(c, "!context", expect="platform chat") for c in (c1, c2)}
    rooms_before = {room["room_id"] for room in await dave.hierarchy(space_id)}
    invites_before = set(dave.seen.invites)

    compose = stack.compose
    await blocking(compose.run, "rm", "--stop", "--force", "bot")
    volumes = [compose.volume("bot-db"), compose.volume("bot-store")]
    await blocking(remove_volumes, volumes)
    started = time.monotonic()
    await blocking(functools.partial(compose.up, "bot", no_deps=True))
    print(f"\nbot on empty volumes -> healthy: {time.monotonic() - started:.1f} s")
    # The bot came back as a new device; a real client shares its room keys with it.
    await dave.renew_room_keys(contexts)

    for chat, context in contexts.items():
        after = await dave.ask(chat, "!context", expect="platform chat", timeout=60)
        assert platform_chat(after) == platform_chat(context)
    assert "still here" in await dave.ask(c2, "still here?", expect="still here")
    await dave.sync(0)
    assert set(dave.seen.invites) == invites_before, "the bot created new rooms"
    assert {room["room_id"] for room in await dave.hierarchy(space_id)} == rooms_before


async def test_sigkill_of_the_bot_during_traffic_loses_and_duplicates_nothing(
    stack: Stack, connect: Connect
) -> None:
    erin = await connect("erin")
    _, chat = await onboard(erin, stack.bot_user_id)
    await erin.ask(chat, "warm up", expect="warm up")

    sent = [await erin.send(chat, f"burst {n}") for n in range(8)]
    await blocking(stack.compose.run, "kill", "-s", "SIGKILL", "bot")
    sent += [await erin.send(chat, f"while down {n}") for n in range(4)]
    await blocking(functools.partial(stack.compose.up, "bot", no_deps=True))

    await erin.wait_for(
        lambda: all(erin.replies_to(e) for e in sent), timeout=120, what="a reply to every message"
    )
    await erin.ask(chat, "barrier", expect="barrier")  # a late duplicate would precede this
    counts = {e: len(erin.replies_to(e)) for e in sent}
    assert all(count == 1 for count in counts.values()), counts
    bodies = {
        e["event_id"]: e["content"]["body"] for e in erin.seen.events if e["event_id"] in counts
    }
    for event_id in sent:
        assert bodies[event_id] in erin.reply_texts(event_id)[0]


async def test_platform_agent_down_gives_a_clear_error_then_recovers(
    stack: Stack, connect: Connect
) -> None:
    frank = await connect("frank")
    _, chat = await onboard(frank, stack.bot_user_id)
    await frank.ask(chat, "warm up", expect="warm up")

    await blocking(stack.compose.run, "stop", "--timeout", "5", "platform-agent")
    try:
        # The bot retries an unreachable platform a few times, then says so.
        error = await frank.ask(chat, "anyone there?", expect="could not answer", timeout=90)
    finally:
        await blocking(functools.partial(stack.compose.up, "platform-agent", no_deps=True))

    assert "anyone there" not in error  # an error, not a late echo
    assert "back again" in await frank.ask(chat, "back again", expect="back again", timeout=60)


async def test_platform_agent_restart_mid_turn_answers_the_turn_exactly_once(
    stack: Stack, connect: Connect
) -> None:
    gina = await connect("gina")
    _, chat = await onboard(gina, stack.bot_user_id)
    await gina.ask(chat, "warm up", expect="warm up")

    def bot_typing() -> bool:
        return stack.bot_user_id in gina.client.rooms[chat].typing_users

    await gina.wait_for(lambda: not bot_typing(), what="the warm-up turn's typing to end")

    # The echo backend holds this turn for 3 s before its first byte; the bot types while
    # it waits. The restart kills the open request (SIGTERM, SIGKILL after 1 s).
    # (Not at the start of the message: that would make it a bot command.)
    slow = await gina.send(chat, "wait !slow 3 interrupted")
    await gina.wait_for(bot_typing, what="the bot typing (turn in flight)")
    await blocking(stack.compose.run, "restart", "--timeout", "1", "platform-agent")

    # Nothing had streamed yet, so the bot resends the turn (same idempotency key) once
    # the platform is back: one answer, no error, no duplicate.
    reply = await gina.wait_reply(slow, expect="interrupted", timeout=90)
    assert reply == "echo: wait !slow 3 interrupted"
    assert "after" in await gina.ask(chat, "after", expect="after", timeout=60)
    assert len(gina.replies_to(slow)) == 1


def remove_volumes(names: list[str]) -> None:
    subprocess.run(["docker", "volume", "rm", *names], check=True, capture_output=True, timeout=60)
