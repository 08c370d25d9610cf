"""The bot's Matrix session and sync token, lost on the server side while it runs."""

from __future__ import annotations

import json
import sqlite3

import httpx

from runtime.dev.bot import BotProcess
from runtime.dev.user import UserClient, onboard
from runtime.matrix.session import SESSION_FILE


async def test_a_revoked_session_logs_in_again_with_the_password_and_keeps_answering(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    session = json.loads((bot.store_path / SESSION_FILE).read_text())

    # An admin (or the bot's owner in a client) logs the bot's device out.
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{bot.synapse.base_url}/_matrix/client/v3/logout",
            headers={"Authorization": f"Bearer {session['access_token']}"},
            timeout=10,
        )
    response.raise_for_status()

    assert await alice.ask(chat, "after the logout", timeout=90) == "echo: after the logout"
    assert bot.is_running()
    assert '"matrix.session_lost"' in bot.log_text()
    renewed = json.loads((bot.store_path / SESSION_FILE).read_text())
    assert renewed["access_token"] != session["access_token"]


async def test_a_sync_token_the_server_does_not_know_starts_over_and_loses_nothing(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    bot.stop()
    with sqlite3.connect(bot.db_path) as db:  # as after a homeserver restore from backup
        db.execute("UPDATE checkpoint SET next_batch = 'not-a-sync-token'")
    unanswered = await alice.send(chat, "sent while the bot was down")
    bot.start_ready()

    assert await alice.wait_reply(unanswered, timeout=60) == "echo: sent while the bot was down"
    assert await alice.ask(chat, "and after") == "echo: and after"
    assert '"sync.token_rejected"' in bot.log_text()
    assert len(alice.replies_to(unanswered)) == 1
