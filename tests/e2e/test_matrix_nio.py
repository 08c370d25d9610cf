"""NioMatrix, the MatrixPort adapter, against a real Synapse."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream, TaskStatus

from contracts.matrix import (
    MatrixAuthError,
    MatrixEvent,
    MatrixRequestError,
    MatrixUnreachable,
    StateEventSpec,
    SyncBatch,
)
from runtime.dev.accounts import RegisteredUser
from runtime.dev.homeserver import LocalHomeserver
from runtime.matrix.nio_adapter import NioMatrix
from runtime.matrix.session import SESSION_FILE
from runtime.matrix.sync_query import SNAPSHOT_NOT_TYPES
from tasks.replies import txn_id_for

Register = Callable[..., RegisteredUser]

CUSTOM_STATE = "lambda.surface.room"
SYNC_DEADLINE_S = 10.0


# --- helpers ---------------------------------------------------------------------------


async def connect_with_password(
    server: LocalHomeserver, user: RegisteredUser, store: Path, **kwargs: Any
) -> NioMatrix:
    return await NioMatrix.connect(
        homeserver=server.base_url,
        user_id=user.user_id,
        password=kwargs.pop("password", user.password),
        access_token=None,
        store_path=store,
        device_name="surface-test",
        **kwargs,
    )


async def connect_with_token(
    homeserver: str, user: RegisteredUser, store: Path, **kwargs: Any
) -> NioMatrix:
    return await NioMatrix.connect(
        homeserver=homeserver,
        user_id=kwargs.pop("user_id", user.user_id),
        password=None,
        access_token=user.access_token,
        store_path=store,
        device_name="surface-test",
        **kwargs,
    )


def read_session_file(store: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((store / SESSION_FILE).read_text())
    return data


def store_listing(store: Path) -> dict[str, int]:
    """Permission bits of the store directory (".") and of every file in it."""
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in store.iterdir()}
    return {**modes, ".": stat.S_IMODE(store.stat().st_mode)}


def device_ids(server: LocalHomeserver, token: str) -> set[str]:
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=10) as client:
        response = client.get(
            "/_matrix/client/v3/devices", headers={"Authorization": f"Bearer {token}"}
        )
    response.raise_for_status()
    return {device["device_id"] for device in response.json()["devices"]}


async def sync_until(
    matrix: NioMatrix, since: str | None, found: Callable[[SyncBatch], Any]
) -> tuple[Any, str]:
    """Sync until ``found(batch)`` is truthy; returns it and the next token."""
    with anyio.fail_after(SYNC_DEADLINE_S):
        while True:
            batch = await matrix.sync(since, timeout_ms=1000)
            since = batch.next_batch
            result = found(batch)
            if result:
                return result, since


def state_of(events: list[MatrixEvent] | Any, event_type: str, state_key: str = "") -> MatrixEvent:
    matches = [e for e in events if e.type == event_type and e.state_key == state_key]
    assert matches, f"no {event_type}/{state_key!r} state in {[e.type for e in events]}"
    return matches[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpRelay:
    """A loopback relay to Synapse that a test can shut without touching Synapse."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._scope = anyio.CancelScope()
        self.port = 0

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        with self._scope:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            async with listener:
                self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
                task_status.started()
                await listener.serve(self._relay)

    def shut(self) -> None:
        """Stop listening and drop every relayed connection."""
        self._scope.cancel()

    async def _relay(self, client: SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", self._target_port)
        async with client, upstream, anyio.create_task_group() as tg:
            tg.start_soon(self._pump, client, upstream)
            await self._pump(upstream, client)
            tg.cancel_scope.cancel()

    @staticmethod
    async def _pump(source: SocketStream, sink: SocketStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


@asynccontextmanager
async def relay_to(server: LocalHomeserver) -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(server.port)
    async with anyio.create_task_group() as tg:
        await tg.start(relay.run)
        yield relay
        relay.shut()


@asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A loopback server that accepts connections and never answers."""

    async def swallow(stream: SocketStream) -> None:
        async with stream:
            async for _ in stream:
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, swallow)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "bot-store"


@pytest.fixture
async def bot(
    synapse: LocalHomeserver, register: Register, store: Path
) -> AsyncIterator[NioMatrix]:
    user = register("bot")
    async with await connect_with_password(synapse, user, store) as matrix:
        yield matrix


@pytest.fixture
async def alice(
    synapse: LocalHomeserver, register: Register, tmp_path: Path
) -> AsyncIterator[NioMatrix]:
    user = register("alice")
    async with await connect_with_token(synapse.base_url, user, tmp_path / "alice") as matrix:
        yield matrix


async def shared_room(bot: NioMatrix, other: NioMatrix) -> str:
    room_id = await bot.create_room(name="shared", invite=[other.user_id])
    await other.join(room_id)
    return room_id


# --- login and session -----------------------------------------------------------------


async def test_connect_with_password_persists_private_session(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")

    async with await connect_with_password(synapse, user, store) as matrix:
        device_id = matrix.device_id

    session = read_session_file(store)
    assert session["user_id"] == user.user_id
    assert session["device_id"] == device_id
    assert session["homeserver"] == synapse.base_url
    assert session["access_token"]
    listing = store_listing(store)
    assert listing.pop(".") == 0o700
    assert SESSION_FILE in listing and set(listing.values()) == {0o600}, listing


async def test_second_connect_reuses_session_without_new_login(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    async with await connect_with_password(synapse, user, store) as first:
        first_device = first.device_id
    session_before = read_session_file(store)
    devices_before = device_ids(synapse, user.access_token)

    async with await connect_with_password(synapse, user, store) as second:
        second_device = second.device_id

    assert second_device == first_device
    assert read_session_file(store) == session_before
    assert device_ids(synapse, user.access_token) == devices_before


async def test_revoked_stored_token_logs_in_again_as_same_device(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    async with await connect_with_password(synapse, user, store) as first:
        device_id = first.device_id
    session = read_session_file(store)
    (store / SESSION_FILE).write_text(json.dumps({**session, "access_token": "syt_revoked"}))

    async with await connect_with_password(synapse, user, store) as again:
        assert again.device_id == device_id
        assert await again.get_account_data("lambda.surface.nothing") is None

    rewritten = read_session_file(store)
    assert rewritten["device_id"] == device_id
    assert rewritten["access_token"] not in ("syt_revoked", session["access_token"])


async def test_revoked_stored_token_without_password_is_auth_error(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    async with await connect_with_password(synapse, user, store):
        pass
    session = read_session_file(store)
    (store / SESSION_FILE).write_text(json.dumps({**session, "access_token": "syt_revoked"}))

    with pytest.raises(MatrixAuthError) as caught:
        await connect_with_password(synapse, user, store, password=None)

    assert caught.value.errcode == "M_UNKNOWN_TOKEN"


async def test_wrong_password_is_auth_error(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")

    with pytest.raises(MatrixAuthError):
        await connect_with_password(synapse, user, store, password="not-the-password")

    assert not (store / SESSION_FILE).exists()


async def test_connect_with_access_token_learns_device_id(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")

    async with await connect_with_token(synapse.base_url, user, store) as matrix:
        assert matrix.device_id == user.device_id
        assert matrix.user_id == user.user_id
        assert matrix.server_name == synapse.server_name

    assert not (store / SESSION_FILE).exists()


async def test_access_token_of_another_user_is_auth_error(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    other = register("other")

    with pytest.raises(MatrixAuthError, match=other.user_id):
        await connect_with_token(synapse.base_url, other, store, user_id=user.user_id)


async def test_connect_to_closed_port_is_unreachable(register: Register, store: Path) -> None:
    user = register("bot")

    with anyio.fail_after(5), pytest.raises(MatrixUnreachable):
        await connect_with_token(f"http://127.0.0.1:{free_port()}", user, store)


async def test_connect_to_silent_server_is_unreachable_after_request_timeout(
    register: Register, store: Path
) -> None:
    user = register("bot")

    async with black_hole() as url:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(MatrixUnreachable):
            await connect_with_token(url, user, store, request_timeout=0.5)

    assert time.monotonic() - started < 5


# --- sync ------------------------------------------------------------------------------


async def test_full_state_sync_with_timeline_limit_0_returns_custom_state(
    bot: NioMatrix,
) -> None:
    space_id = await bot.create_room(name="Space", is_space=True, topic="the user's space")
    via = {"via": [bot.server_name]}
    room_id = await bot.create_room(
        name="agent chat",
        initial_state=[
            StateEventSpec(CUSTOM_STATE, {"agent": "helper", "n": 1}),
            StateEventSpec("m.space.parent", {**via, "canonical": True}, state_key=space_id),
        ],
    )
    await bot.send_state(space_id, "m.space.child", via, state_key=room_id)

    batch = await bot.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)

    room = batch.joined[room_id]
    space = batch.joined[space_id]
    assert room.timeline == []
    assert state_of(room.state, CUSTOM_STATE).content == {"agent": "helper", "n": 1}
    assert state_of(room.state, "m.space.parent", space_id).content["canonical"] is True
    assert state_of(room.state, "m.room.name").content == {"name": "agent chat"}
    assert state_of(space.state, "m.space.child", room_id).content == via
    assert state_of(space.state, "m.room.create").content["type"] == "m.space"
    assert state_of(space.state, "m.room.topic").content["topic"] == "the user's space"
    # State the bot never reads is left out of snapshots (runtime/matrix/sync_query.py).
    kinds = {event.type for event in [*room.state, *space.state]}
    assert kinds.isdisjoint(SNAPSHOT_NOT_TYPES), kinds & set(SNAPSHOT_NOT_TYPES)


async def test_repeated_full_state_sync_is_not_served_from_a_stale_cache(
    bot: NioMatrix,
) -> None:
    # Synapse caches identical /sync requests for two minutes; a restarted reconciler
    # must still see the rooms created since its previous snapshot.
    await bot.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)
    room_id = await bot.create_room(name="created between snapshots")

    batch = await bot.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)

    assert room_id in batch.joined


async def test_default_sync_takes_state_from_the_timeline_too(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="fresh")
    await bot.send_state(room_id, CUSTOM_STATE, {"v": 2}, state_key="k")

    batch = await bot.sync(None, timeout_ms=0)

    room = batch.joined[room_id]
    assert any(e.type == CUSTOM_STATE for e in room.timeline)
    assert state_of(room.state, CUSTOM_STATE, "k").content == {"v": 2}


async def test_incremental_sync_delivers_other_users_message_raw(
    bot: NioMatrix, alice: NioMatrix
) -> None:
    room_id = await shared_room(bot, alice)
    since = (await bot.sync(None, timeout_ms=0, timeline_limit=0)).next_batch
    content = {
        "msgtype": "lambda.surface.unknown",
        "body": "hello bot",
        "x.custom": {"nested": [1, 2, {"deep": None}]},
    }
    event_id = await alice.send_message(room_id, content, txn_id="t1")

    def message_from_alice(batch: SyncBatch) -> MatrixEvent | None:
        room = batch.joined.get(room_id)
        return next((e for e in room.timeline if e.event_id == event_id), None) if room else None

    event, _ = await sync_until(bot, since, message_from_alice)

    assert event.content == content
    assert event.sender == alice.user_id
    assert event.type == "m.room.message"
    assert event.room_id == room_id
    assert event.origin_server_ts > 0
    assert not event.is_state


async def test_invite_shows_inviter_and_is_direct(
    synapse: LocalHomeserver, bot: NioMatrix, register: Register
) -> None:
    alice = register("alice")
    async with httpx.AsyncClient(base_url=synapse.base_url, trust_env=False) as http:
        response = await http.post(
            "/_matrix/client/v3/createRoom",
            headers={"Authorization": f"Bearer {alice.access_token}"},
            json={"preset": "trusted_private_chat", "invite": [bot.user_id], "is_direct": True},
        )
    response.raise_for_status()
    room_id = response.json()["room_id"]

    invite, _ = await sync_until(bot, None, lambda batch: batch.invited.get(room_id))

    assert invite.inviter == alice.user_id
    assert invite.is_direct is True
    assert state_of(invite.state, "m.room.member", bot.user_id).content["membership"] == "invite"


async def test_invite_to_plain_room_is_not_direct(bot: NioMatrix, alice: NioMatrix) -> None:
    room_id = await alice.create_room(name="plain", invite=[bot.user_id])

    invite, _ = await sync_until(bot, None, lambda batch: batch.invited.get(room_id))

    assert invite.inviter == alice.user_id
    assert invite.is_direct is False


async def test_account_data_shows_in_sync(bot: NioMatrix) -> None:
    await bot.set_account_data("lambda.surface.test", {"a": 1})

    batch = await bot.sync(None, timeout_ms=0, timeline_limit=0)

    assert batch.account_data["lambda.surface.test"] == {"a": 1}


async def test_sync_after_homeserver_goes_away_is_unreachable_promptly(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    async with relay_to(synapse) as relay:
        homeserver = f"http://127.0.0.1:{relay.port}"
        async with await connect_with_token(homeserver, user, store) as matrix:
            since = (await matrix.sync(None, timeout_ms=0, timeline_limit=0)).next_batch
            relay.shut()
            started = time.monotonic()

            with anyio.fail_after(5), pytest.raises(MatrixUnreachable):
                await matrix.sync(since, timeout_ms=30000)

            assert time.monotonic() - started < 2


# --- sending ---------------------------------------------------------------------------


async def test_send_message_with_same_txn_id_sends_once(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="txn")
    txn_id = txn_id_for("$cause", "reply")

    first = await bot.send_message(room_id, {"msgtype": "m.text", "body": "once"}, txn_id=txn_id)
    second = await bot.send_message(room_id, {"msgtype": "m.text", "body": "once"}, txn_id=txn_id)

    assert first == second
    page = await bot.room_messages(room_id, None, limit=20)
    assert [e.event_id for e in page.events if e.type == "m.room.message"] == [first]


async def test_resend_after_relogin_on_same_device_is_deduplicated(
    synapse: LocalHomeserver, register: Register, store: Path
) -> None:
    user = register("bot")
    content = {"msgtype": "m.text", "body": "reply"}
    txn_id = txn_id_for("$cause", "reply")
    async with await connect_with_password(synapse, user, store) as before_crash:
        room_id = await before_crash.create_room(name="crash")
        first = await before_crash.send_message(room_id, content, txn_id=txn_id)
    session = read_session_file(store)
    (store / SESSION_FILE).write_text(json.dumps({**session, "access_token": "syt_revoked"}))

    async with await connect_with_password(synapse, user, store) as after_crash:
        second = await after_crash.send_message(room_id, content, txn_id=txn_id)

    assert read_session_file(store)["access_token"] != session["access_token"]
    assert second == first


async def test_send_custom_event_type(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="custom")

    event_id = await bot.send_message(
        room_id, {"k": "v"}, txn_id="custom-1", event_type="lambda.surface.ping"
    )

    page = await bot.room_messages(room_id, None, limit=1)
    assert [(e.event_id, e.type, e.content) for e in page.events] == [
        (event_id, "lambda.surface.ping", {"k": "v"})
    ]


async def test_send_to_room_bot_is_not_in_is_forbidden(bot: NioMatrix, alice: NioMatrix) -> None:
    room_id = await alice.create_room(name="alice only")

    with pytest.raises(MatrixRequestError) as caught:
        await bot.send_message(room_id, {"msgtype": "m.text", "body": "hi"}, txn_id="x")

    assert caught.value.errcode == "M_FORBIDDEN"
    assert caught.value.status == 403


async def test_typing_and_invite_and_join(bot: NioMatrix, alice: NioMatrix) -> None:
    room_id = await bot.create_room(name="typing")
    await bot.invite(room_id, alice.user_id)
    await alice.join(room_id)

    await bot.set_typing(room_id, True, timeout_ms=5000)
    await bot.set_typing(room_id, False)

    members = [e for e in await bot.room_state(room_id) if e.type == "m.room.member"]
    joined = {e.state_key for e in members if e.content.get("membership") == "join"}
    assert joined == {bot.user_id, alice.user_id}


async def test_sync_leaves_out_typing_so_it_does_not_wake_the_bot(
    bot: NioMatrix, alice: NioMatrix
) -> None:
    room_id = await bot.create_room(name="quiet")
    await bot.invite(room_id, alice.user_id)
    await alice.join(room_id)
    since = (await bot.sync(None, timeout_ms=0, timeline_limit=0)).next_batch

    await alice.set_typing(room_id, True, timeout_ms=5000)
    batch = await bot.sync(since, timeout_ms=0, timeline_limit=10)

    # Without the filter, Synapse answers with the room and its typing event.
    assert room_id not in batch.joined


# --- reading ---------------------------------------------------------------------------


async def test_room_state_returns_raw_custom_state(bot: NioMatrix) -> None:
    room_id = await bot.create_room(
        name="state", initial_state=[StateEventSpec(CUSTOM_STATE, {"x": [1]}, "key")]
    )

    state = await bot.room_state(room_id)

    event = state_of(state, CUSTOM_STATE, "key")
    assert event.content == {"x": [1]}
    assert event.room_id == room_id
    assert event.event_id.startswith("$")


async def test_room_messages_backwards_returns_newest_first_and_pages(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="history")
    for n in range(5):
        await bot.send_message(room_id, {"msgtype": "m.text", "body": f"m{n}"}, txn_id=f"h{n}")

    newest = await bot.room_messages(room_id, None, backwards=True, limit=3)
    older = await bot.room_messages(room_id, newest.end, backwards=True, limit=2)

    assert [e.content["body"] for e in newest.events] == ["m4", "m3", "m2"]
    assert [e.content["body"] for e in older.events] == ["m1", "m0"]
    assert newest.end is not None


async def test_room_messages_reaches_the_start_of_the_room(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="short")

    page = await bot.room_messages(room_id, None, backwards=True, limit=100)
    rest = await bot.room_messages(room_id, page.end, backwards=True, limit=100)

    assert page.events[-1].type == "m.room.create"
    assert rest.events == []
    assert rest.end is None


async def test_account_data_roundtrip_and_missing_is_none(bot: NioMatrix) -> None:
    assert await bot.get_account_data("lambda.surface.missing") is None

    await bot.set_account_data("lambda.surface.state", {"rooms": {"a": 1}})

    assert await bot.get_account_data("lambda.surface.state") == {"rooms": {"a": 1}}


async def test_display_name(synapse: LocalHomeserver, bot: NioMatrix, register: Register) -> None:
    carol = register("carol")
    async with httpx.AsyncClient(base_url=synapse.base_url, trust_env=False) as http:
        response = await http.put(
            f"/_matrix/client/v3/profile/{carol.user_id}/displayname",
            headers={"Authorization": f"Bearer {carol.access_token}"},
            json={"displayname": "Carol C."},
        )
    response.raise_for_status()

    assert await bot.display_name(carol.user_id) == "Carol C."
    assert await bot.display_name("@nobody-here:localhost") is None


# --- media -----------------------------------------------------------------------------


async def test_upload_download_roundtrip(bot: NioMatrix) -> None:
    data = os.urandom(100_000)

    mxc = await bot.upload(data, content_type="application/octet-stream", filename="blob.bin")

    assert mxc.startswith(f"mxc://{bot.server_name}/")
    assert await bot.download(mxc, max_bytes=len(data)) == data


async def test_download_larger_than_limit_is_refused(bot: NioMatrix) -> None:
    mxc = await bot.upload(b"x" * 1001, content_type="text/plain", filename="big.txt")

    with pytest.raises(MatrixRequestError) as caught:
        await bot.download(mxc, max_bytes=1000)

    assert caught.value.errcode == "M_TOO_LARGE"


async def test_download_unknown_media_is_not_found(bot: NioMatrix) -> None:
    with pytest.raises(MatrixRequestError) as caught:
        await bot.download(f"mxc://{bot.server_name}/doesnotexist", max_bytes=10)

    assert caught.value.errcode == "M_NOT_FOUND"


async def test_download_rejects_a_non_mxc_uri(bot: NioMatrix) -> None:
    with pytest.raises(MatrixRequestError):
        await bot.download("https://example.org/x", max_bytes=10)


# --- leaving ---------------------------------------------------------------------------


async def test_leave_shows_in_sync_and_forget_succeeds(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="going")
    since = (await bot.sync(None, timeout_ms=0, timeline_limit=0)).next_batch

    await bot.leave(room_id, reason="done")
    _, since = await sync_until(bot, since, lambda batch: room_id in batch.left)
    await bot.forget(room_id)

    batch = await bot.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)
    assert room_id not in batch.joined
    assert room_id not in batch.left


async def test_forget_a_joined_room_is_refused(bot: NioMatrix) -> None:
    room_id = await bot.create_room(name="staying")

    with pytest.raises(MatrixRequestError):
        await bot.forget(room_id)
