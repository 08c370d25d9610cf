"""What a person sees of an answer on a real Synapse: its notification, its images, the room.

The notification is read from Synapse's own push evaluation (`GET /notifications`
for the user), not assumed from the push rules. Streamed answers come from the
reference platform-agent (`!stream <seconds> <pieces>`, see tests/e2e/test_limits.py).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from contracts.markers import REPLY_TO_FIELD
from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import download, upload_file
from tests.e2e.platform_service import PlatformProcess

Register = Callable[..., RegisteredUser]


def notifications(synapse: LocalHomeserver, user: UserClient, room_id: str) -> list[Any]:
    """What Synapse notified `user` of in `room_id` (its push rules, evaluated by Synapse)."""
    response = httpx.get(
        f"{synapse.base_url}/_matrix/client/v3/notifications",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {user.user.access_token}"},
        timeout=10,
    )
    response.raise_for_status()
    return [n for n in response.json()["notifications"] if n["room_id"] == room_id]


@pytest.mark.timeout(180)
async def test_a_30_second_streamed_answer_notifies_once_with_its_start(
    synapse: LocalHomeserver,
    register: Register,
    platform: PlatformProcess,
    alice: UserClient,
    tmp_path: Path,
) -> None:
    registry = tmp_path / "agents.yaml"
    registry.write_text("agents:\n" + platform.registry_entry("ref", default=True) + "\n")
    bot = BotProcess(synapse, register("bot"), tmp_path / "bot", registry=registry)
    try:
        bot.start_ready()
        _, chat = await onboard(alice, bot.bot.user_id)
        question = "Tell me a long story. " * 80 + " !stream 1 30"  # 30 pieces, 1 s apart

        started = time.monotonic()
        asked = await alice.send(chat, question)
        expected = f"echo: {question}"
        first_seen: list[float] = []

        def first_message() -> dict[str, Any] | None:
            replies = alice.replies_to(asked)
            if replies and not first_seen:
                first_seen.append(time.monotonic() - started)
            return replies[0] if replies else None

        await alice.wait_for(first_message, timeout=60, what="the first message")
        await alice.wait_for(
            lambda: "".join(alice.reply_texts(asked)) == expected,
            timeout=90,
            what="the whole streamed answer",
        )
        took = time.monotonic() - started

        [message] = alice.replies_to(asked)  # one visible message: no second event, no notice
        edits = [
            e
            for e in alice.bot_messages(chat)
            if e["content"].get("m.relates_to", {}).get("event_id") == message["event_id"]
        ]
        assert took >= 28, f"the answer streamed for {took:.1f} s"
        assert len(edits) >= 2, "the answer was shown growing"
        assert all(e["content"].get(REPLY_TO_FIELD) == asked for e in edits)
        redactions = [
            e
            for e in alice.seen.events
            if e["room_id"] == chat and e.get("type") == "m.room.redaction"
        ]
        assert redactions == [], "no 'Message deleted' placeholders"

        answer_notes = [
            n
            for n in notifications(synapse, alice, chat)
            if n["event"]["type"] == "m.room.message"
            and n["event"]["content"].get(REPLY_TO_FIELD) == asked
        ]
        [note] = answer_notes  # exactly one notification for the answer
        body = note["event"]["content"]["body"]
        assert note["event"]["event_id"] == message["event_id"]
        assert expected.startswith(body), "the notification shows the answer's own start"
        assert len(body) >= 300, f"a substantial start, not a fragment: {len(body)} characters"
        print(  # the measurement the README quotes
            f"first message after {first_seen[0]:.1f} s with {len(body)} characters; "
            f"answer complete after {took:.1f} s with {len(edits)} edits"
        )
    finally:
        bot.kill()


def photo(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(out, format="PNG")
    return out.getvalue()


async def test_an_image_the_agent_sends_is_inline_with_size_and_thumbnail(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    data = photo(1600, 1200)
    upload = await upload_file(alice, chat, "chart.png", data, mimetype="image/png")
    await alice.wait_reply(upload, expect="chart.png")

    asked = await alice.send(chat, "send it back !return")

    def the_image() -> dict[str, Any] | None:
        images = [e for e in alice.replies_to(asked) if e["content"].get("msgtype") == "m.image"]
        return images[0] if images else None

    event = await alice.wait_for(the_image, what="the image")
    info = event["content"]["info"]
    assert (info["mimetype"], info["size"], info["w"], info["h"]) == (
        "image/png",
        len(data),
        1600,
        1200,
    )
    assert await download(alice, event["content"]["url"]) == data
    thumb = await download(alice, info["thumbnail_url"])
    assert info["thumbnail_info"]["size"] == len(thumb)
    with Image.open(io.BytesIO(thumb)) as shown:
        assert (
            shown.size == (800, 600) == (info["thumbnail_info"]["w"], info["thumbnail_info"]["h"])
        )


async def test_the_room_shows_its_agent_in_topic_and_member_name(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.wait_for(lambda: alice.bot_messages(chat), what="welcome")

    await alice.ask(chat, "!rename Plans", expect="Plans")

    state = await alice.get_state(chat)
    [topic] = [e["content"]["topic"] for e in state if e["type"] == "m.room.topic"]
    assert topic.startswith("Plans (C1) · agent: Echo · platform chat ")
    [member] = [
        e["content"]
        for e in state
        if e["type"] == "m.room.member" and e["state_key"] == bot.bot.user_id
    ]
    assert member["displayname"] == "Echo"
