"""The MatrixPort contract (tests/contract/matrix_port.py) on the fake homeserver.

The same suite runs on the nio adapter and Synapse in tests/e2e; the peer here acts
through the fake's test-side helpers (`add_room`, `add_event`, `user_joins`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fakes import FakeMatrix

from contracts.matrix import JsonDict
from tests.contract.matrix_port import MatrixPortContract, World

PEER = "@peer:example.org"


class FakePeer:
    """Another user of the fake homeserver."""

    def __init__(self, fake: FakeMatrix, user_id: str) -> None:
        self._fake = fake
        self._user_id = user_id

    @property
    def user_id(self) -> str:
        return self._user_id

    async def create_room(self, *, invite: Sequence[str] = (), is_direct: bool = False) -> str:
        fake, me = self._fake, self._user_id
        room_id = fake.add_room(me)
        fake.add_event(room_id, me, "m.room.join_rules", {"join_rule": "invite"}, state_key="")
        for user_id in invite:
            content: JsonDict = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            fake.add_event(room_id, me, "m.room.member", content, state_key=user_id)
        return room_id

    async def join(self, room_id: str) -> None:
        membership = self._fake.room(room_id).membership(self._user_id)
        assert membership in ("invite", "join"), f"{self._user_id} is not invited to {room_id}"
        self._fake.user_joins(room_id, self._user_id)

    async def send_message(self, room_id: str, content: JsonDict) -> str:
        return self._fake.add_event(room_id, self._user_id, "m.room.message", content).event_id

    async def member_content(self, room_id: str, user_id: str) -> JsonDict | None:
        room = self._fake.room(room_id)
        assert room.membership(self._user_id) == "join", f"{self._user_id} is not in {room_id}"
        return room.state_content("m.room.member", user_id)

    async def set_display_name(self, name: str) -> None:
        self._fake.display_names[self._user_id] = name

    async def read_receipt(self, room_id: str, user_id: str) -> str | None:
        if user_id != self._fake.user_id:
            return None
        read = [event_id for room, event_id in self._fake.receipts if room == room_id]
        return read[-1] if read else None


@pytest.fixture
def world() -> World:
    fake = FakeMatrix()
    return World(port=fake, peer=FakePeer(fake, PEER))


class TestFakeMatrix(MatrixPortContract):
    pass
