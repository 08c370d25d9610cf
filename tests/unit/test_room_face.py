"""A chat room's face: its topic, and the bot under its agent's name and avatar."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeMatrix
from surfaces import build_bot

from contracts.matrix import MatrixRequestError
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from runtime.platforms.echo import EchoPlatform
from runtime.store import SqliteStore
from tasks.catalogue import Catalogue
from tasks.room_face import AVATARS_ACCOUNT_DATA, RoomFace, room_topic

ALICE = "@alice:example.org"
ECHO = AgentEntry(id="echo", name="Echo", default=True)
HELPER = AgentEntry(id="helper", name="Helper", avatar="mxc://example.org/helperface")
t = Catalogue("en")


class Chat:
    def __init__(self, store: SqliteStore, registry: AgentRegistry) -> None:
        self.matrix = FakeMatrix()
        self.store = store
        self.bot = build_bot(
            store,
            self.matrix,
            EchoPlatform(),
            registry=registry,
            is_allowed=lambda user_id: user_id == ALICE,
        )
        self.room_id = ""

    async def start(self) -> None:
        room_id = self.matrix.add_invite(ALICE)
        await self.bot.handle(LedgerEntry.invite(room_id, inviter=ALICE, is_direct=True))
        room = self.store.find_chat_room(ALICE, "C1")
        assert room is not None
        self.room_id = room.room_id
        self.matrix.user_joins(self.room_id, ALICE)

    async def send(self, text: str) -> None:
        event = self.matrix.add_message(self.room_id, ALICE, text)
        await self.bot.handle(LedgerEntry.of_event(event))

    @property
    def record(self) -> RoomRecord:
        room = self.store.get_room(self.room_id)
        assert room is not None
        return room

    @property
    def topic(self) -> object:
        content = self.matrix.room(self.room_id).state_content("m.room.topic")
        return content.get("topic") if content else None

    @property
    def bot_member(self) -> dict[str, object]:
        content = self.matrix.room(self.room_id).state_content("m.room.member", self.matrix.user_id)
        assert content is not None
        return content


@pytest.fixture
async def chat(store: SqliteStore) -> Chat:
    opened = Chat(store, AgentRegistry([ECHO, HELPER]))
    await opened.start()
    return opened


def test_the_topic_names_chat_agent_and_platform_chat() -> None:
    room = RoomRecord(
        room_id="!r:example.org",
        room_type="chat",
        chat_id="C3",
        display_name="Plans",
        matrix_user_id=ALICE,
        agent_id="echo",
        platform_chat_id="42",
    )

    assert room_topic(t, room, ECHO) == "Plans (C3) · agent: Echo · platform chat 42"
    assert "agent: gone" in room_topic(t, room.model_copy(update={"agent_id": "gone"}), None)


async def test_a_new_chat_has_its_topic_and_the_bot_shows_as_its_agent(chat: Chat) -> None:
    assert chat.topic == room_topic(t, chat.record, ECHO)
    assert chat.bot_member == {"membership": "join", "displayname": "Echo"}


async def test_rename_updates_the_topic(chat: Chat) -> None:
    await chat.send("!rename Holiday")

    assert (
        chat.topic == f"Holiday (C1) · agent: Echo · platform chat {chat.record.platform_chat_id}"
    )


async def test_clear_updates_the_topic_with_the_new_platform_chat(chat: Chat) -> None:
    before = chat.topic

    await chat.send("!clear")
    await chat.send("!yes")

    assert chat.topic != before
    assert chat.topic == room_topic(t, chat.record, ECHO)


async def test_agent_switch_updates_topic_name_and_avatar(chat: Chat) -> None:
    await chat.send("!agent helper")

    assert chat.topic == room_topic(t, chat.record, HELPER)
    assert chat.bot_member == {
        "membership": "join",
        "displayname": "Helper",
        "avatar_url": "mxc://example.org/helperface",
    }


async def test_a_refused_topic_is_logged_and_the_rest_goes_on(chat: Chat) -> None:
    face = RoomFace(chat.matrix, AgentRegistry([ECHO, HELPER]), t)
    switched = chat.record.model_copy(update={"agent_id": "helper"})
    chat.matrix.fail["send_state"] = [MatrixRequestError("no", errcode="M_FORBIDDEN", status=403)]

    await face.show(switched)  # cosmetic: the topic's refusal is not raised

    assert chat.topic == room_topic(t, chat.record, ECHO), "the topic write was refused"
    assert chat.bot_member["displayname"] == "Helper", "the member write after it went through"


async def test_an_avatar_file_is_uploaded_once_and_remembered(
    store: SqliteStore, tmp_path: Path
) -> None:
    face_file = tmp_path / "face.png"
    face_file.write_bytes(b"\x89PNG not really")
    painted = AgentEntry(id="echo", name="Echo", avatar=str(face_file), default=True)
    chat = Chat(store, AgentRegistry([painted]))
    await chat.start()

    [upload] = chat.matrix.uploads
    assert chat.bot_member["avatar_url"] == upload.mxc
    remembered = await chat.matrix.get_account_data(AVATARS_ACCOUNT_DATA)
    assert remembered is not None and upload.mxc in remembered.values()

    # A new run (nothing in memory) finds it in the account data.
    again = RoomFace(chat.matrix, AgentRegistry([painted]), t)
    await again.show(chat.record)
    assert len(chat.matrix.uploads) == 1
