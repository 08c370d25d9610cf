"""The local Synapse launcher (runtime/dev/homeserver.py) against a real Synapse process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import nio
import pytest
import yaml

from runtime.dev.accounts import RegisteredUser
from runtime.dev.homeserver import (
    RATE_LIMITS,
    HomeserverConfig,
    HomeserverStartError,
    LocalHomeserver,
    RegistrationError,
    generate_config,
)

Register = Callable[..., RegisteredUser]


def _client(server: LocalHomeserver, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.base_url, headers=headers, trust_env=False, timeout=10)


def _whoami(server: LocalHomeserver, token: str) -> str:
    with _client(server, token) as client:
        response = client.get("/_matrix/client/v3/account/whoami")
    assert response.status_code == 200, response.text
    return str(response.json()["user_id"])


def test_health_answers_ok(synapse: LocalHomeserver) -> None:
    with _client(synapse) as client:
        response = client.get("/health")

    assert response.status_code == 200
    assert response.text == "OK"


def test_register_user_returns_a_working_token(synapse: LocalHomeserver) -> None:
    user = synapse.register_user("carol", "carol-password")

    assert user.user_id == "@carol:localhost"
    assert _whoami(synapse, user.access_token) == "@carol:localhost"


def test_register_user_again_logs_the_existing_user_in(synapse: LocalHomeserver) -> None:
    first = synapse.register_user("dave", "dave-password")

    second = synapse.register_user("dave", "dave-password")

    assert second.user_id == first.user_id
    assert second.access_token != first.access_token
    assert _whoami(synapse, second.access_token) == first.user_id


def test_register_existing_user_with_wrong_password_raises(synapse: LocalHomeserver) -> None:
    synapse.register_user("erin", "erin-password")

    with pytest.raises(RegistrationError, match="'erin'"):
        synapse.register_user("erin", "not-erins-password")


def test_register_admin_user_is_server_admin(synapse: LocalHomeserver, register: Register) -> None:
    admin = register("admin", admin=True)
    plain = register("plain")

    with _client(synapse, admin.access_token) as client:
        details = client.get(f"/_synapse/admin/v2/users/{admin.user_id}")
    with _client(synapse, plain.access_token) as client:
        refused = client.get(f"/_synapse/admin/v2/users/{plain.user_id}")

    assert details.status_code == 200, details.text
    assert details.json()["admin"] is True
    assert refused.status_code == 403


async def test_two_users_talk_through_the_homeserver(
    synapse: LocalHomeserver, register: Register
) -> None:
    alice_user, bob_user = register("alice"), register("bob")
    alice = _nio_client(synapse, alice_user)
    bob = _nio_client(synapse, bob_user)
    try:
        with anyio.fail_after(30):
            created = await alice.room_create(name="e2e chat")
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            invited = await alice.room_invite(room_id, bob_user.user_id)
            assert isinstance(invited, nio.RoomInviteResponse), invited

            while room_id not in bob.invited_rooms:
                await _sync(bob)
            joined = await bob.join(room_id)
            assert isinstance(joined, nio.JoinResponse), joined
            await _sync(bob)

            content = {"msgtype": "m.text", "body": "hello bob"}
            sent = await alice.room_send(room_id, "m.room.message", content)
            assert isinstance(sent, nio.RoomSendResponse), sent

            received = None
            while received is None:
                sync = await _sync(bob)
                room = sync.rooms.join.get(room_id)
                events = room.timeline.events if room else []
                received = next((e for e in events if e.event_id == sent.event_id), None)
    finally:
        await alice.close()
        await bob.close()

    assert isinstance(received, nio.RoomMessageText)
    assert received.sender == alice_user.user_id
    assert received.body == "hello bob"


def _nio_client(server: LocalHomeserver, user: RegisteredUser) -> nio.AsyncClient:
    client = nio.AsyncClient(server.base_url, user.user_id)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


async def _sync(client: nio.AsyncClient) -> nio.SyncResponse:
    # Long-poll: returns as soon as something new arrives for this user.
    response = await client.sync(timeout=1000)
    assert isinstance(response, nio.SyncResponse), response
    return response


def test_config_serves_only_the_client_api_on_loopback(synapse: LocalHomeserver) -> None:
    config = yaml.safe_load(synapse.config_path.read_text())

    assert config["listeners"] == [
        {
            "port": synapse.port,
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "bind_addresses": ["127.0.0.1"],
            "resources": [{"names": ["client"], "compress": False}],
        }
    ]
    assert config["trusted_key_servers"] == []
    assert config["federation_domain_whitelist"] == []
    with _client(synapse) as client:
        assert client.get("/_matrix/federation/v1/version").status_code == 404
        assert client.get("/_matrix/key/v2/server").status_code == 404


def test_every_synapse_rate_limit_is_raised(synapse: LocalHomeserver) -> None:
    # Parse with Synapse's own config class so a limiter added by a newer Synapse fails here.
    from synapse.config.ratelimiting import RatelimitConfig, RatelimitSettings

    ratelimits = RatelimitConfig(root_config=None)  # type: ignore[arg-type]
    ratelimits.read_config(yaml.safe_load(synapse.config_path.read_text()))

    limiters = {
        name: value
        for name, value in vars(ratelimits).items()
        if name.startswith("rc_") and name != "rc_federation"
    }
    assert len(limiters) >= 20
    too_low = {
        name: limiter
        for name, limiter in limiters.items()
        if not isinstance(limiter, RatelimitSettings)
        or limiter.per_second < 1000
        or limiter.burst_count < 10000
    }
    assert too_low == {}
    assert ratelimits.rc_federation.reject_limit >= 10000


def test_reused_data_dir_gets_the_new_port_and_keeps_the_secret(
    synapse: LocalHomeserver, tmp_path: Path
) -> None:
    (tmp_path / "homeserver.yaml").write_bytes(synapse.config_path.read_bytes())
    original = yaml.safe_load(synapse.config_path.read_text())

    path = generate_config(HomeserverConfig(data_dir=tmp_path, port=18448))

    rewritten = yaml.safe_load(path.read_text())
    assert rewritten["listeners"][0]["port"] == 18448
    assert rewritten["registration_shared_secret"] == original["registration_shared_secret"]
    assert path.stat().st_mode & 0o077 == 0, "the file holds secrets: owner-only"


def test_overrides_replace_the_dev_settings_on_a_reused_data_dir(
    synapse: LocalHomeserver, tmp_path: Path
) -> None:
    (tmp_path / "homeserver.yaml").write_bytes(synapse.config_path.read_bytes())
    limit = {"per_second": 0.5, "burst_count": 2}

    path = generate_config(
        HomeserverConfig(data_dir=tmp_path, port=18449, overrides={"rc_message": limit})
    )

    rewritten = yaml.safe_load(path.read_text())
    assert rewritten["rc_message"] == limit
    assert rewritten["rc_room_creation"] == RATE_LIMITS["rc_room_creation"]


def test_start_failure_raises_with_the_synapse_log_tail(tmp_path: Path) -> None:
    # A config Synapse rejects: it lacks the mandatory report_stats setting.
    (tmp_path / "homeserver.yaml").write_text("server_name: localhost\n")
    server = LocalHomeserver(HomeserverConfig(data_dir=tmp_path, port=0))

    with pytest.raises(HomeserverStartError, match="report_stats"):
        server.start()

    assert not server.is_running()


def test_start_on_a_port_in_use_raises(synapse: LocalHomeserver, tmp_path: Path) -> None:
    server = LocalHomeserver(HomeserverConfig(data_dir=tmp_path, port=synapse.port))

    with pytest.raises(HomeserverStartError, match="already in use"):
        server.start()

    assert server.pid is None, "must not spawn Synapse onto a taken port"


def test_stop_terminates_the_process(tmp_path: Path) -> None:
    server = LocalHomeserver(HomeserverConfig(data_dir=tmp_path, port=0))
    server.start()
    assert server.is_running()

    server.stop()

    assert not server.is_running()
    with _client(server) as client, pytest.raises(httpx.ConnectError):
        client.get("/health")
    server.stop()  # idempotent
