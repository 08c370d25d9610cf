"""A lost `createRoom` answer on a real Synapse: the room is found, never created twice.

Issue 14, item 5. A loopback proxy (tests/e2e/lossy_proxy.py) lets Synapse create
the room and answers the bot with a 502; the bot retries the event and finds the
room by the trigger its marker names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anyio
import pytest

from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import joined_rooms
from tests.e2e.lossy_proxy import LossyProxy

MakeBot = Callable[..., BotProcess]


@pytest.fixture
def lossy(synapse: LocalHomeserver) -> Iterator[LossyProxy]:
    # createRoom 1 is the Space, 2 the first chat, 3 the chat of the first `!new`.
    proxy = LossyProxy(synapse.base_url, lose_create_room={1, 3})
    proxy.start()
    yield proxy
    proxy.stop()


async def test_lost_create_room_answers_make_no_second_space_or_chat(
    make_bot: MakeBot, lossy: LossyProxy, synapse: LocalHomeserver, alice: UserClient
) -> None:
    bot = await anyio.to_thread.run_sync(
        lambda: make_bot(extra_env={"MATRIX_HOMESERVER": lossy.url})
    )

    space_id, first_chat = await onboard(alice, bot.bot.user_id)
    created = await alice.ask(first_chat, "!new Notes", expect="Created", timeout=60)

    assert "(C2)" in created
    [lost_space, lost_chat] = lossy.lost
    assert space_id == lost_space
    assert len(lossy.created) == 3  # Space, C1, C2: nothing created twice
    invited = {room for room, inviter in alice.seen.invites.items() if inviter == bot.bot.user_id}
    assert invited == set(lossy.created)
    joined = joined_rooms(synapse, bot.bot)
    assert set(lossy.created) <= joined
    assert len(joined) == len(lossy.created) + 1  # and the DM
    chats = await alice.ask(first_chat, "!chats", expect="C2")
    assert "Notes" in chats and "C3" not in chats
    children = await alice.hierarchy(space_id)
    assert lost_chat in {room["room_id"] for room in children}
