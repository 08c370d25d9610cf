"""Self cross-signing: spec test vectors, the key file, and the procedure against a fake server."""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from contracts.matrix import JsonDict, MatrixRequestError, MatrixUnreachable
from runtime.matrix.cross_signing import (
    CROSS_SIGNED_DEVICE_FILE,
    CROSS_SIGNING_FILE,
    UPLOAD_ATTEMPTS,
    CrossSigningKeys,
    CrossSigningState,
    Ed25519Key,
    canonical_json,
    cross_signing_state,
    ensure_cross_signed,
    read_keys,
    record_signed,
    signed_on_record,
    verify_signature,
    write_keys,
)

USER = "@bot:example.org"
DEVICE = "BOTDEVICE"

# Spec appendices, "Cryptographic test vectors": this seed, key id ed25519:1, entity "domain".
SPEC_SEED = base64.b64decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1=")


def test_signs_the_spec_vector_for_an_empty_object() -> None:
    assert Ed25519Key(SPEC_SEED).sign({}) == (
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
    )


def test_signs_the_spec_vector_for_a_small_object_ignoring_existing_signatures() -> None:
    obj = {"two": "Two", "one": 1, "signatures": {"other": {"ed25519:x": "y"}}, "unsigned": {}}
    assert Ed25519Key(SPEC_SEED).sign(obj) == (
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
    )


def test_canonical_json_sorts_keys_and_keeps_unicode() -> None:
    assert (
        canonical_json({"b": 1, "a": {"d": "é", "c": []}})
        == '{"a":{"c":[],"d":"é"},"b":1}'.encode()
    )


def test_a_signature_verifies_and_a_changed_object_does_not() -> None:
    key = Ed25519Key.generate()
    signed = key.signed({"one": 1}, USER)
    assert verify_signature(signed, USER, key.public_key)
    assert not verify_signature({**signed, "one": 2}, USER, key.public_key)
    assert not verify_signature(signed, "@other:example.org", key.public_key)
    assert not verify_signature(signed, USER, Ed25519Key.generate().public_key)


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "store" / "cross_signing.json"
    keys = CrossSigningKeys.generate()
    write_keys(path, keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keys(path) == keys


def test_a_device_recorded_signed_is_that_device_with_those_keys(tmp_path: Path) -> None:
    write_keys(tmp_path / CROSS_SIGNING_FILE, CrossSigningKeys.generate())
    mine = {"user_id": USER, "device_id": DEVICE, "identity_key": "ed-key"}
    assert not signed_on_record(tmp_path, **mine), "no record yet"

    record_signed(tmp_path, **mine)

    assert signed_on_record(tmp_path, **mine)
    assert not signed_on_record(tmp_path, **{**mine, "device_id": "OTHER"})
    assert not signed_on_record(tmp_path, **{**mine, "identity_key": "a-new-account"})
    write_keys(tmp_path / CROSS_SIGNING_FILE, CrossSigningKeys.generate())
    assert not signed_on_record(tmp_path, **mine), "other keys on file"
    (tmp_path / CROSS_SIGNING_FILE).unlink()
    assert not signed_on_record(tmp_path, **mine), "no keys on file"


def test_an_unreadable_record_is_no_record(tmp_path: Path) -> None:
    write_keys(tmp_path / CROSS_SIGNING_FILE, CrossSigningKeys.generate())
    (tmp_path / CROSS_SIGNED_DEVICE_FILE).write_text("{not json")

    assert not signed_on_record(tmp_path, user_id=USER, device_id=DEVICE, identity_key="k")


def test_unreadable_key_file_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "cross_signing.json"
    assert read_keys(path) is None
    path.write_text("{not json")
    assert read_keys(path) is None


# --- the procedure against a fake homeserver ----------------------------------------------


@dataclass
class FakeKeysServer:
    """Just enough of Synapse's key endpoints: it checks what a real server checks."""

    password: str = "secret"
    device_keys: dict[str, JsonDict] = field(default_factory=dict)
    master: JsonDict | None = None
    self_signing: JsonDict | None = None
    uploads: list[JsonDict] = field(default_factory=list)
    signature_uploads: list[JsonDict] = field(default_factory=list)
    first_upload_needs_auth: bool = False
    down: bool = False
    failing_uploads: int = 0  # identity uploads answered with a 500, counted down
    upload_attempts: int = 0

    def add_device(self, device_id: str) -> None:
        device_key = Ed25519Key.generate()
        keys = {
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "device_id": device_id,
            "user_id": USER,
            "keys": {f"ed25519:{device_id}": device_key.public_key, f"curve25519:{device_id}": "c"},
        }
        signed = device_key.signed(keys, USER)
        signed["signatures"][USER] = {
            f"ed25519:{device_id}": signed["signatures"][USER].popitem()[1]
        }
        self.device_keys[device_id] = signed

    async def json(
        self, method: str, path: str, body: JsonDict | None = None, *, timeout: float | None = None
    ) -> Any:
        if self.down:
            raise MatrixUnreachable("down")
        assert body is not None
        if path.endswith("/keys/query"):
            answer: JsonDict = {
                "device_keys": {
                    USER: {k: {**v, "unsigned": {"x": 1}} for k, v in self.device_keys.items()}
                }
            }
            if self.master is not None and self.self_signing is not None:
                answer["master_keys"] = {USER: self.master}
                answer["self_signing_keys"] = {USER: self.self_signing}
            return answer
        if path.endswith("/keys/device_signing/upload"):
            self.upload_attempts += 1
            if self.failing_uploads:
                self.failing_uploads -= 1
                raise MatrixUnreachable("500 M_UNKNOWN", status=500)
            needs_auth = self.master is not None or self.first_upload_needs_auth
            auth = body.get("auth")
            if needs_auth and (not auth or auth.get("password") != self.password):
                raise MatrixRequestError("UIA", errcode=None, status=401)
            self.uploads.append(body)
            self.master, self.self_signing = body["master_key"], body["self_signing_key"]
            return {}
        if path.endswith("/keys/signatures/upload"):
            self.signature_uploads.append(body)
            signed = body[USER][DEVICE]
            assert self.self_signing is not None
            (ssk,) = self.self_signing["keys"].values()
            stored = {k: v for k, v in self.device_keys[DEVICE].items() if k != "signatures"}
            same = {k: v for k, v in signed.items() if k != "signatures"} == stored
            if not same or not verify_signature(signed, USER, ssk):
                return {"failures": {USER: {DEVICE: {"errcode": "M_INVALID_SIGNATURE"}}}}
            self.device_keys[DEVICE]["signatures"][USER].update(signed["signatures"][USER])
            return {"failures": {}}
        raise AssertionError(path)


@pytest.fixture
def server() -> FakeKeysServer:
    fake = FakeKeysServer()
    fake.add_device(DEVICE)
    return fake


async def test_first_run_uploads_an_identity_and_signs_the_device(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "cross_signing.json"
    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=key_file
    )
    assert state is CrossSigningState.SIGNED
    keys = read_keys(key_file)
    assert keys is not None
    assert server.master is not None
    assert list(server.master["keys"].values()) == [keys.master.public_key]
    assert len(server.signature_uploads) == 1


async def test_restart_with_the_key_file_changes_nothing(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "cross_signing.json"
    await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=key_file
    )
    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=key_file
    )
    assert state is CrossSigningState.SIGNED
    assert len(server.uploads) == 1
    assert len(server.signature_uploads) == 1


async def test_a_new_device_is_signed_with_the_existing_identity(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "cross_signing.json"
    await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password=None, key_file=key_file
    )
    server.add_device(DEVICE)  # a new device (same id in the fake, new keys, unsigned)
    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password=None, key_file=key_file
    )
    assert state is CrossSigningState.SIGNED
    assert len(server.uploads) == 1


async def test_lost_key_file_replaces_the_identity_with_the_password(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "a.json"
    )
    old_master = server.master
    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "b.json"
    )
    assert state is CrossSigningState.SIGNED
    assert server.master != old_master


async def test_without_a_password_a_replacement_is_refused_and_reported(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "a.json"
    )
    server.add_device(DEVICE)
    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password=None, key_file=tmp_path / "b.json"
    )
    assert state is CrossSigningState.UNSIGNED_DEVICE


async def test_network_errors_propagate_for_a_retry(server: FakeKeysServer, tmp_path: Path) -> None:
    server.down = True
    with pytest.raises(MatrixUnreachable):
        await ensure_cross_signed(
            server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "k.json"
        )


@pytest.mark.virtual_time
async def test_an_identity_upload_the_server_keeps_failing_leaves_the_device_unsigned(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    server.add_device(DEVICE)
    server.failing_uploads = 1_000  # a server bug, not a blip: the bot must still start

    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "k.json"
    )

    assert state is CrossSigningState.NO_IDENTITY
    assert server.upload_attempts == UPLOAD_ATTEMPTS


@pytest.mark.virtual_time
async def test_an_identity_upload_failing_once_is_tried_again(
    server: FakeKeysServer, tmp_path: Path
) -> None:
    server.add_device(DEVICE)
    server.failing_uploads = 1

    state = await ensure_cross_signed(
        server, user_id=USER, device_id=DEVICE, password="secret", key_file=tmp_path / "k.json"
    )

    assert state is CrossSigningState.SIGNED
    assert server.upload_attempts == 2


def test_state_rejects_a_self_signing_key_the_master_did_not_sign() -> None:
    keys = CrossSigningKeys.generate()
    forged = {**keys.self_signing_key(USER), "signatures": {}}
    query = {"master_keys": {USER: keys.master_key(USER)}, "self_signing_keys": {USER: forged}}
    assert cross_signing_state(query, USER, DEVICE) is CrossSigningState.UNSIGNED_SELF_SIGNING_KEY
    assert cross_signing_state({}, USER, DEVICE) is CrossSigningState.NO_IDENTITY
