"""The MatrixPort contract (tests/contract/matrix_port.py) on the nio adapter and Synapse.

The bot is a `NioMatrix` logged in with a password; the peer is another registered
user talking to the client-server API directly (httpx), so nothing of the adapter
is on the peer's side.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from contracts.matrix import JsonDict
from runtime.dev.accounts import RegisteredUser
from runtime.dev.homeserver import LocalHomeserver
from runtime.matrix.nio_adapter import NioMatrix
from tests.contract.matrix_port import MatrixPortContract, World
from tests.e2e.harness import read_receipt as harness_read_receipt

_txn_ids = itertools.count()


def _q(part: str) -> str:
    return quote(part, safe="")


class HttpPeer:
    """A user of the client-server API, with nothing but HTTP requests."""

    def __init__(self, http: httpx.AsyncClient, user: RegisteredUser) -> None:
        self._http = http
        self._user = user

    @property
    def user_id(self) -> str:
        return self._user.user_id

    async def _request(self, method: str, path: str, body: JsonDict | None = None) -> Any:
        response = await self._http.request(method, f"/_matrix/client/v3{path}", json=body)
        response.raise_for_status()
        return response.json()

    async def create_room(self, *, invite: Sequence[str] = (), is_direct: bool = False) -> str:
        preset = "trusted_private_chat" if is_direct else "private_chat"
        body = {"preset": preset, "invite": list(invite), "is_direct": is_direct}
        answer = await self._request("POST", "/createRoom", body)
        return str(answer["room_id"])

    async def join(self, room_id: str) -> None:
        await self._request("POST", f"/rooms/{_q(room_id)}/join", {})

    async def send_message(self, room_id: str, content: JsonDict) -> str:
        txn = f"peer-{next(_txn_ids)}"
        path = f"/rooms/{_q(room_id)}/send/m.room.message/{txn}"
        return str((await self._request("PUT", path, content))["event_id"])

    async def member_content(self, room_id: str, user_id: str) -> JsonDict | None:
        path = f"/rooms/{_q(room_id)}/state/m.room.member/{_q(user_id)}"
        response = await self._http.get(f"/_matrix/client/v3{path}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        content: JsonDict = response.json()
        return content

    async def set_display_name(self, name: str) -> None:
        path = f"/profile/{_q(self.user_id)}/displayname"
        await self._request("PUT", path, {"displayname": name})

    async def read_receipt(self, room_id: str, user_id: str) -> str | None:
        """From an initial /sync of that room: its receipts are ephemeral events."""
        return await harness_read_receipt(self._http, room_id, user_id)


@pytest.fixture
async def world(
    synapse: LocalHomeserver, register: Callable[..., RegisteredUser], tmp_path: Path
) -> AsyncIterator[World]:
    bot, peer = register("bot"), register("peer")
    headers = {"Authorization": f"Bearer {peer.access_token}"}
    async with (
        await NioMatrix.connect(
            homeserver=synapse.base_url,
            user_id=bot.user_id,
            password=bot.password,
            access_token=None,
            store_path=tmp_path / "store",
            device_name="contract",
        ) as port,
        httpx.AsyncClient(
            base_url=synapse.base_url, headers=headers, trust_env=False, timeout=10
        ) as http,
    ):
        yield World(port=port, peer=HttpPeer(http, peer))


class TestNioMatrixOnSynapse(MatrixPortContract):
    pass
