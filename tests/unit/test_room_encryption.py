"""Rooms the bot creates: chat rooms encrypted by default, state (markers) in the clear."""

from __future__ import annotations

import pytest
from fakes import FakeMatrix

from contracts.markers import ROOM_MARKER_TYPE
from contracts.state import RoomRecord, RoomType, UserRecord
from runtime.settings import Settings
from tasks.rooms import create_chat_room, create_space

ALICE = "@alice:example.org"


def draft(space_id: str) -> RoomRecord:
    return RoomRecord(
        room_id="",
        room_type=RoomType.CHAT,
        matrix_user_id=ALICE,
        space_id=space_id,
        chat_id="C1",
        display_name="Chat 1",
        agent_id="echo",
        platform_chat_id="1",
    )


@pytest.mark.parametrize("encrypted", [True, False])
async def test_chat_room_encryption_follows_the_flag(encrypted: bool) -> None:
    matrix = FakeMatrix()
    space_id = await create_space(matrix, UserRecord(matrix_user_id=ALICE), "Lambda")

    room_id = await create_chat_room(matrix, draft(space_id), encrypted=encrypted)

    room = matrix.room(room_id)
    encryption = room.state_content("m.room.encryption")
    assert (encryption == {"algorithm": "m.megolm.v1.aes-sha2"}) is encrypted
    assert (encryption is None) is not encrypted
    assert room.state_content(ROOM_MARKER_TYPE) is not None, "the marker stays plain state"
    assert await matrix.room_is_encrypted(room_id) is encrypted
    assert matrix.room(space_id).state_content("m.room.encryption") is None


def test_rooms_are_encrypted_unless_configured_off(clean_environment: None) -> None:
    assert Settings().surface_encrypt_rooms is True
    assert Settings(surface_encrypt_rooms=False).surface_encrypt_rooms is False


def test_the_store_passphrase_is_secret(clean_environment: None) -> None:
    settings = Settings(matrix_store_passphrase="hunter2")
    assert "hunter2" not in repr(settings)
    assert settings.matrix_store_passphrase is not None
    assert settings.matrix_store_passphrase.get_secret_value() == "hunter2"
