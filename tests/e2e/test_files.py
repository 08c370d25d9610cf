"""Files through the workspace: uploads reach the agent, agent files reach the user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

import pytest

from runtime.dev.bot import BotProcess
from runtime.dev.user import UserClient, onboard
from tests.e2e.harness import download, upload_file

LIMIT = 4096


@pytest.fixture
def bot(make_bot: Callable[..., BotProcess]) -> BotProcess:
    return make_bot(extra_env={"SURFACE_MAX_UPLOAD_BYTES": str(LIMIT)})


def _attachments(reply: str) -> list[str]:
    line = next(ln for ln in reply.splitlines() if ln.startswith("attachments:"))
    return [p.strip() for p in line.removeprefix("attachments:").split(",")]


async def test_uploaded_file_reaches_the_agent_as_a_relative_path(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    data = b"quarterly numbers\n" * 20

    upload = await upload_file(alice, chat, "../../etc/report.txt", data)
    assert "report.txt" in await alice.wait_reply(upload, expect="report")
    reply = await alice.ask(chat, "summarise the file", expect="attachments")

    [path] = _attachments(reply)
    assert not PurePosixPath(path).is_absolute() and ".." not in PurePosixPath(path).parts
    assert path.startswith("surfaces/matrix/") and "/inbox/" in path
    assert (bot.workdir / "workspace" / path).read_bytes() == data
    # Staged attachments go with one message only.
    assert "attachments" not in await alice.ask(chat, "and now?")


async def test_file_emitted_by_the_agent_is_uploaded_to_the_room(
    bot: BotProcess, alice: UserClient
) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)

    trigger = await alice.send(chat, "make me a file !emit notes.txt")

    def the_file() -> dict[str, object] | None:
        files = [e for e in alice.replies_to(trigger) if e["content"].get("msgtype") == "m.file"]
        return files[0] if files else None

    event = await alice.wait_for(the_file, what="the emitted file")
    content = event["content"]
    data = await download(alice, content["url"])
    assert data == (bot.workdir / "workspace" / "agent-out" / "notes.txt").read_bytes()
    assert content["info"]["size"] == len(data)
    assert content["info"]["mimetype"] == "text/plain"


async def test_file_over_the_limit_gets_a_clear_message(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)

    upload = await upload_file(
        alice, chat, "big.bin", b"x" * (LIMIT + 1), "application/octet-stream"
    )

    answer = await alice.wait_reply(upload)
    assert "4" in answer and ("limit" in answer or "large" in answer), answer
    assert "attachments" not in await alice.ask(chat, "anything staged?")


async def test_two_rooms_never_share_a_directory(bot: BotProcess, alice: UserClient) -> None:
    _, chat = await onboard(alice, bot.bot.user_id)
    await alice.ask(chat, "!new", expect="C2")
    [other] = await alice.accept_invites()

    paths = []
    for room in (chat, other):
        upload = await upload_file(alice, room, "same-name.txt", room.encode())
        await alice.wait_reply(upload, expect="same-name")
        paths += _attachments(await alice.ask(room, "here", expect="attachments"))

    first, second = (PurePosixPath(p).parent for p in paths)
    assert first != second
    assert (bot.workdir / "workspace" / paths[0]).read_bytes() == chat.encode()
    assert (bot.workdir / "workspace" / paths[1]).read_bytes() == other.encode()
