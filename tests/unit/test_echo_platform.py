"""The in-process echo platform stays bounded over a long run (the embedded default)."""

from __future__ import annotations

import pytest

from contracts.platform import TurnDone, UserTurn
from runtime.platforms import echo
from runtime.platforms.echo import EchoPlatform


async def answer(platform: EchoPlatform, key: str, text: str) -> str:
    turn = UserTurn(agent_id="echo", platform_chat_id="1", text=text, idempotency_key=key)
    [done] = [event async for event in platform.send_turn(turn) if isinstance(event, TurnDone)]
    assert done.text is not None
    return done.text


async def test_what_it_records_keeps_the_newest_turns_and_replays_recent_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(echo, "RECENT_TURNS", 10)
    platform = EchoPlatform()

    for n in range(45):
        await answer(platform, f"$e{n}", f"message {n}")

    assert 10 <= len(platform.turns_seen) <= 20
    assert platform.turns_seen[-1].text == "message 44"
    assert len(platform._replies) <= 20
    # A recent turn asked again (a replay after a crash) gets its recorded reply.
    assert await answer(platform, "$e44", "changed since") == "echo: message 44"
    # One long forgotten is answered afresh.
    assert await answer(platform, "$e0", "asked again") == "echo: asked again"
