"""MSC4222 `state_after`: with it, an intact restart asks a timeline of 0 and stays correct.

Synapse 1.163 has MSC4222 behind the per-user experimental feature `msc4222` (admin
API); /versions does not advertise it, so the bot learns it from a snapshot's answer
(runtime/matrix/snapshot.py) and asks a window of 0 from the next intact start on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient
from runtime.matrix.snapshot import STATE_AFTER_FILE
from tests.e2e.harness import binding, chat_at_a_forked_tip


def enable_msc4222(synapse: LocalHomeserver, admin: RegisteredUser, user_id: str) -> None:
    response = httpx.put(
        f"{synapse.base_url}/_synapse/admin/v1/experimental_features/{user_id}",
        json={"features": {"msc4222": True}},
        headers={"Authorization": f"Bearer {admin.access_token}"},
        timeout=10,
    )
    response.raise_for_status()


def log_events(bot: BotProcess, offset: int, name: str) -> list[dict[str, Any]]:
    found = []
    for line in bot.log_text()[offset:].splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            found.append(json.loads(line))
    return found


async def test_an_intact_restart_asks_timeline_0_with_state_after_and_sees_a_forked_tip(
    synapse: LocalHomeserver,
    bot: BotProcess,
    alice: UserClient,
    register: Callable[..., RegisteredUser],
) -> None:
    enable_msc4222(synapse, register("admin", admin=True), bot.bot.user_id)
    chat, context = await chat_at_a_forked_tip(alice, bot)
    bot.stop()
    bot.start_ready()  # intact, not yet known: the state window, and it learns state_after
    assert json.loads((bot.store_path / STATE_AFTER_FILE).read_text())["state_after"] is True
    bot.stop()
    offset = len(bot.log_text())

    bot.start_ready()

    [prefetched] = log_events(bot, offset, "snapshot.prefetched")
    assert prefetched["timeline_limit"] == 0
    [report] = log_events(bot, offset, "reconcile.done")
    assert report["conflicts"] == [] and report["changes"] == 0, report
    assert log_events(bot, offset, "reconcile.state_after_missing") == []
    assert binding(await alice.ask(chat, "!context", expect="platform chat")) == context
