"""`check-config --probe` reports whether the bot's device is cross-signed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from runtime.matrix.cross_signing import CrossSigningKeys
from runtime.matrix.probe import probe_cross_signing
from runtime.matrix.session import SESSION_FILE, StoredSession, write_session
from runtime.settings import Settings

USER = "@bot:example.org"
DEVICE = "DEV1"
HOMESERVER = "http://hs.example.org"


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        matrix_homeserver=HOMESERVER,
        matrix_user_id=USER,
        matrix_password="pw",
        matrix_store_path=tmp_path / "store",
        **extra,
    )


def keys_answer(*, signed: bool) -> dict[str, Any]:
    keys = CrossSigningKeys.generate()
    device = {"user_id": USER, "device_id": DEVICE, "keys": {"ed25519:DEV1": "x"}}
    if signed:
        device = keys.self_signing.signed(device, USER)
    return {
        "device_keys": {USER: {DEVICE: device}},
        "master_keys": {USER: keys.master_key(USER)},
        "self_signing_keys": {USER: keys.self_signing_key(USER)},
    }


def server(answer: dict[str, Any], seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.url.path.endswith("/account/whoami"):
            return httpx.Response(200, json={"user_id": USER, "device_id": DEVICE})
        assert json.loads(request.content) == {"device_keys": {USER: []}}
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle)


async def test_a_signed_device_is_reported_ok(tmp_path: Path, clean_environment: None) -> None:
    seen: list[str] = []
    config = settings(tmp_path, matrix_access_token="tok")
    result = await probe_cross_signing(config, transport=server(keys_answer(signed=True), seen))
    assert result.problem is None
    assert "DEV1 is cross-signed" in result.summary
    assert seen == ["Bearer tok", "Bearer tok"]
    assert "tok" not in result.summary


async def test_an_unsigned_device_is_a_problem_that_names_the_fix(
    tmp_path: Path, clean_environment: None
) -> None:
    write_session(
        tmp_path / "store" / SESSION_FILE,
        StoredSession(user_id=USER, device_id=DEVICE, access_token="stored", homeserver=HOMESERVER),
    )
    seen: list[str] = []
    result = await probe_cross_signing(
        settings(tmp_path), transport=server(keys_answer(signed=False), seen)
    )
    assert result.problem is not None
    assert "unsigned_device" in result.problem and "MATRIX_PASSWORD" in result.problem
    assert seen[0] == "Bearer stored"


async def test_without_a_session_nothing_is_asked(tmp_path: Path, clean_environment: None) -> None:
    seen: list[str] = []
    result = await probe_cross_signing(settings(tmp_path), transport=server({}, seen))
    assert result.problem is None and "first start" in result.summary
    assert seen == []
