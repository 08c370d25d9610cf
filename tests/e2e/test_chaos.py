"""Chaos: SIGKILL the bot at random moments under traffic.

Every user message must be answered exactly once, and no platform chat id may
be handed out twice. The number of kills comes from SURFACE_CHAOS_KILLS
(CI uses at least 20); the counts are printed. A variant does the same with the
bot's messages rate limited by the homeserver (1/s, burst 2) under bursts of
messages; its kills come from SURFACE_CHAOS_LIMITED_KILLS (default 4: every
send waits for the rate, so each kill costs seconds). Another runs in encrypted rooms
(SURFACE_ENCRYPT_ROOMS=true, the DM encrypted by the user, a nio user with its own
crypto store): besides the above, every message is answered with its own text (so the
bot read it), and the user sees 0 undecryptable events from the bot; its kills come
from SURFACE_CHAOS_ENCRYPTED_KILLS (default 4: the crypto work makes each round slower).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import EncryptedUser, joined_rooms, override_ratelimit, room_state_as

KILLS = int(os.environ.get("SURFACE_CHAOS_KILLS", "8"))
LIMITED_KILLS = int(os.environ.get("SURFACE_CHAOS_LIMITED_KILLS", "4"))
ENCRYPTED_KILLS = int(os.environ.get("SURFACE_CHAOS_ENCRYPTED_KILLS", "4"))


@pytest.mark.timeout(120 + 30 * KILLS)
async def test_sigkill_under_traffic_loses_and_duplicates_nothing(
    synapse: LocalHomeserver, bot: BotProcess, alice: UserClient
) -> None:
    await chaos(synapse, bot, alice, kills=KILLS, burst=(2, 6))


@pytest.mark.timeout(180 + 40 * LIMITED_KILLS)
async def test_sigkill_under_bursts_with_a_rate_limited_bot_loses_and_duplicates_nothing(
    synapse: LocalHomeserver,
    register: Callable[..., RegisteredUser],
    bot: BotProcess,
    alice: UserClient,
) -> None:
    admin = register("admin", admin=True)

    def limit_the_bot() -> None:
        override_ratelimit(synapse, admin, bot.bot.user_id, per_second=1, burst_count=2)

    await chaos(synapse, bot, alice, kills=LIMITED_KILLS, burst=(4, 9), after_setup=limit_the_bot)
    assert '"operation": "answer.send"' in bot.log_text(), "the homeserver did limit the bot"


@pytest.mark.timeout(150 + 40 * ENCRYPTED_KILLS)
async def test_sigkill_under_traffic_in_encrypted_rooms_loses_duplicates_and_garbles_nothing(
    synapse: LocalHomeserver,
    register: Callable[..., RegisteredUser],
    make_bot: Callable[..., BotProcess],
    tmp_path: Path,
) -> None:
    bot = make_bot(
        extra_env={
            "SURFACE_ENCRYPT_ROOMS": "true",
            "MATRIX_STORE_PASSPHRASE": "e2e store passphrase, not a real secret",
        }
    )
    store = tmp_path / "alice-store"
    store.mkdir()
    alice = await EncryptedUser.login_encrypted(synapse.base_url, register("alice"), store)
    try:
        await chaos(synapse, bot, alice, kills=ENCRYPTED_KILLS, burst=(2, 6))
    finally:
        await alice.close()


async def chaos(
    synapse: LocalHomeserver,
    bot: BotProcess,
    alice: UserClient,
    *,
    kills: int,
    burst: tuple[int, int],
    after_setup: Callable[[], None] | None = None,
) -> None:
    """Three chats, then `kills` rounds of a burst of messages (and `!new`) and a SIGKILL."""
    rng = random.Random(int(os.environ.get("SURFACE_CHAOS_SEED", "1234")))
    space_id, c1 = await onboard(alice, bot.bot.user_id)
    await alice.ask(c1, "!new", expect="C2")
    await alice.ask(c1, "!new", expect="C3")
    rooms = [c1, *await alice.accept_invites(2)]
    if after_setup is not None:
        after_setup()
    sent: list[str] = []
    commands: list[str] = []
    n = 0
    for kill in range(kills):
        if kill % 4 == 3:
            # Sometimes kill it while it is still starting (logging in, reconciling).
            await anyio.sleep(rng.uniform(0.5, 2.5))
        else:
            await anyio.to_thread.run_sync(bot.wait_ready)
        for _ in range(rng.randint(*burst)):
            n += 1
            if n % 7 == 0:
                commands.append(await alice.send(rng.choice(rooms), "!new"))
            else:
                sent.append(await alice.send(rng.choice(rooms), f"message {n}"))
        await anyio.sleep(rng.uniform(0.0, 0.6))
        bot.kill()
        bot.start()
    await anyio.to_thread.run_sync(bot.wait_ready)

    everything = [*sent, *commands]
    try:
        await alice.wait_for(
            lambda: all(alice.replies_to(e) for e in everything),
            timeout=180,
            what="a reply to every message",
        )
    except TimeoutError:
        missing = [e for e in everything if not alice.replies_to(e)]
        raise AssertionError(f"unanswered: {missing}\n{bot.log_tail(30)}") from None
    await alice.ask(c1, "final barrier", timeout=60)  # later duplicates would come before this
    replies = {e: len(alice.replies_to(e)) for e in everything}
    lost = sum(1 for count in replies.values() if count == 0)
    duplicates = sum(count - 1 for count in replies.values() if count > 1)
    answered = sum(1 for count in replies.values() if count > 0)
    wrong = [e for e in sent if alice.reply_texts(e)[0] != f"echo: {_body(alice, e)}"]

    platform_chat_ids = []
    linked = {r["room_id"] for r in await alice.hierarchy(space_id)} - {space_id}
    for room_id in joined_rooms(synapse, bot.bot):
        state = room_state_as(synapse, bot.bot, room_id)
        marker = [e for e in state if e["type"] == "lambda.surface.room"]
        if marker:
            platform_chat_ids.append(marker[0]["content"]["platform_chat_id"])
            assert room_id in linked, f"chat room {room_id} is not linked from the Space"
            if isinstance(alice, EncryptedUser):
                assert any(e["type"] == "m.room.encryption" for e in state), room_id
    reused = len(platform_chat_ids) - len(set(platform_chat_ids))
    undecryptable = [
        e
        for e in (alice.undecryptable() if isinstance(alice, EncryptedUser) else [])
        if e.get("sender") == bot.bot.user_id
    ]
    print(
        f"\nchaos: kills={kills} messages={len(everything)} answered={answered} "
        f"duplicates={duplicates} lost={lost} rooms={len(platform_chat_ids)} "
        f"platform_chat_ids_reused={reused} undecryptable_from_bot={len(undecryptable)}"
    )
    assert duplicates == 0, replies
    assert lost == 0, replies
    assert wrong == []
    assert undecryptable == [], undecryptable
    assert reused == 0, platform_chat_ids
    assert len(platform_chat_ids) == 3 + len(commands)


def _body(user: UserClient, event_id: str) -> str:
    event = next(e for e in user.seen.events if e.get("event_id") == event_id)
    body: str = event["content"]["body"]
    return body
