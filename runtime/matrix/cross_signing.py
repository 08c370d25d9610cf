"""The bot cross-signs its own device (client-server API "Cross-signing", MSC1756).

Clients in "exclude insecure devices" mode (MSC4153; matrix-js-sdk's
``OnlySignedDevicesIsolationMode``) share room keys only with devices their owner
signed: the device's keys must carry a signature of the owner's *self-signing* key,
which itself carries a signature of the owner's *master* key. nio 0.26 has no
cross-signing, so the bot does it here:

1. ``POST /keys/query`` for its own user: the published master and self-signing keys
   and the device's keys.
2. If the published master key is not the bot's own (none yet, or another one after the
   key file was lost), upload a master and a self-signing key
   (``/keys/device_signing/upload``, user-interactive auth with the bot's password;
   Synapse takes a first upload without it, MSC3967).
3. If the device's keys lack a valid signature of that self-signing key, sign them and
   upload the signature (``/keys/signatures/upload``).

The private keys (Ed25519 seeds) live in ``cross_signing.json`` in the store
directory, mode 0600, written before the public halves are uploaded, and are reused
after a restart, so a restart changes nothing on the server. Losing the file means a
new identity is uploaded (with the password): clients that had verified the bot see
its identity change.

Once the server showed the device signed, ``cross_signed_device.json`` records it (the
device, its Ed25519 identity key and the two public keys that signed it), so a restart
that resumes the same device with the same keys need not ask before it is ready
(``signed_on_record``); the runtime checks again once the bot is ready.

No nio here: signing is Ed25519 over canonical JSON (spec appendix "Signing JSON"),
with pycryptodome.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from contracts.matrix import JsonDict, MatrixError, MatrixRateLimited, MatrixUnreachable
from runtime.matrix.session import write_private_json
from tasks.retry import Backoff, retry

__all__ = [
    "CROSS_SIGNED_DEVICE_FILE",
    "CROSS_SIGNING_FILE",
    "CrossSigningKeys",
    "CrossSigningState",
    "Ed25519Key",
    "JsonRequests",
    "canonical_json",
    "cross_signing_state",
    "ensure_cross_signed",
    "read_keys",
    "record_signed",
    "signed_on_record",
    "verify_signature",
    "write_keys",
]

log = structlog.get_logger(__name__)

# Tries of the identity upload before the bot goes on unsigned (see ensure_cross_signed).
UPLOAD_ATTEMPTS = 3
UPLOAD_BACKOFF = Backoff(initial=1.0, factor=2.0, max=5.0, jitter=0.1)

CROSS_SIGNING_FILE: Final = "cross_signing.json"
CROSS_SIGNED_DEVICE_FILE: Final = "cross_signed_device.json"
_KEYS_QUERY: Final = "/_matrix/client/v3/keys/query"
_DEVICE_SIGNING_UPLOAD: Final = "/_matrix/client/v3/keys/device_signing/upload"
_SIGNATURES_UPLOAD: Final = "/_matrix/client/v3/keys/signatures/upload"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "utf-8"
    )


def _signable(obj: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


@dataclass(frozen=True, slots=True)
class Ed25519Key:
    """An Ed25519 private key held as its 32-byte seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> Ed25519Key:
        return cls(seed=bytes(ECC.generate(curve="ed25519").seed))

    @property
    def public_key(self) -> str:
        """The public key, unpadded base64 (as Matrix writes keys)."""
        key = ECC.construct(curve="ed25519", seed=self.seed)
        return _b64(key.public_key().export_key(format="raw"))

    def sign(self, obj: Mapping[str, Any]) -> str:
        """The signature of `obj` without its `signatures` and `unsigned`, unpadded base64."""
        key = ECC.construct(curve="ed25519", seed=self.seed)
        return _b64(eddsa.new(key, "rfc8032").sign(_signable(obj)))

    def signed(self, obj: Mapping[str, Any], user_id: str) -> JsonDict:
        """A copy of `obj` with this key's signature added under `user_id`."""
        result: JsonDict = json.loads(json.dumps(obj))
        signatures = result.setdefault("signatures", {}).setdefault(user_id, {})
        signatures[f"ed25519:{self.public_key}"] = self.sign(obj)
        return result


def verify_signature(obj: Mapping[str, Any], user_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature by the Ed25519 `public_key` under `user_id`."""
    signatures = obj.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, dict) else None
    signature = by_user.get(f"ed25519:{public_key}") if isinstance(by_user, dict) else None
    if not isinstance(signature, str):
        return False
    try:
        key = eddsa.import_public_key(_unb64(public_key))
        eddsa.new(key, "rfc8032").verify(_signable(obj), _unb64(signature))
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class CrossSigningKeys:
    """The bot's master and self-signing keys (no user-signing key: it verifies nobody)."""

    master: Ed25519Key
    self_signing: Ed25519Key

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(master=Ed25519Key.generate(), self_signing=Ed25519Key.generate())

    def master_key(self, user_id: str) -> JsonDict:
        public = self.master.public_key
        return {"user_id": user_id, "usage": ["master"], "keys": {f"ed25519:{public}": public}}

    def self_signing_key(self, user_id: str) -> JsonDict:
        public = self.self_signing.public_key
        unsigned: JsonDict = {
            "user_id": user_id,
            "usage": ["self_signing"],
            "keys": {f"ed25519:{public}": public},
        }
        return self.master.signed(unsigned, user_id)


def read_keys(path: Path) -> CrossSigningKeys | None:
    """The stored keys, or None if there are none or the file cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return CrossSigningKeys(
            master=Ed25519Key(_unb64(str(data["master"]))),
            self_signing=Ed25519Key(_unb64(str(data["self_signing"]))),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cross_signing.keys_unreadable", path=str(path), error=type(exc).__name__)
        return None


def write_keys(path: Path, keys: CrossSigningKeys) -> None:
    """Write the private keys atomically, mode 0600 (the directory 0700)."""
    write_private_json(
        path, {"master": _b64(keys.master.seed), "self_signing": _b64(keys.self_signing.seed)}
    )


def _signed_record(
    keys: CrossSigningKeys, user_id: str, device_id: str, identity_key: str
) -> JsonDict:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "device_ed25519": identity_key,
        "master": keys.master.public_key,
        "self_signing": keys.self_signing.public_key,
    }


def record_signed(store_path: Path, *, user_id: str, device_id: str, identity_key: str) -> None:
    """Record that the server showed this device signed by the keys on file."""
    keys = read_keys(store_path / CROSS_SIGNING_FILE)
    if keys is None:
        return
    record = _signed_record(keys, user_id, device_id, identity_key)
    write_private_json(store_path / CROSS_SIGNED_DEVICE_FILE, record)


def signed_on_record(store_path: Path, *, user_id: str, device_id: str, identity_key: str) -> bool:
    """Whether the record says this very device (same id and identity key) was signed by
    the keys now on file. A missing or unreadable record, or any difference, is a no."""
    keys = read_keys(store_path / CROSS_SIGNING_FILE)
    if keys is None:
        return False
    try:
        record = json.loads((store_path / CROSS_SIGNED_DEVICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(record == _signed_record(keys, user_id, device_id, identity_key))


# --- what the server shows -------------------------------------------------------------


class CrossSigningState(StrEnum):
    """How the device stands, as the server's /keys/query answer shows it."""

    SIGNED = "signed"  # master -> self-signing -> device, every signature valid
    NO_IDENTITY = "no_identity"  # no master or self-signing key published
    UNSIGNED_SELF_SIGNING_KEY = "unsigned_self_signing_key"
    UNSIGNED_DEVICE = "unsigned_device"  # the device lacks the self-signing key's signature
    NO_DEVICE_KEYS = "no_device_keys"  # the device has not uploaded its keys


def _single_key(key_obj: Any) -> str | None:
    keys = key_obj.get("keys") if isinstance(key_obj, dict) else None
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    (value,) = keys.values()
    return value if isinstance(value, str) else None


def cross_signing_state(
    query: Mapping[str, Any], user_id: str, device_id: str
) -> CrossSigningState:
    """Judge a /keys/query answer for the bot's own user and device. Pure."""
    master = _dict_at(query, "master_keys", user_id)
    ssk = _dict_at(query, "self_signing_keys", user_id)
    device = _dict_at(query, "device_keys", user_id, device_id)
    master_public, ssk_public = _single_key(master), _single_key(ssk)
    if master_public is None or ssk_public is None or ssk is None:
        return CrossSigningState.NO_IDENTITY
    if not verify_signature(ssk, user_id, master_public):
        return CrossSigningState.UNSIGNED_SELF_SIGNING_KEY
    if device is None:
        return CrossSigningState.NO_DEVICE_KEYS
    if not verify_signature(device, user_id, ssk_public):
        return CrossSigningState.UNSIGNED_DEVICE
    return CrossSigningState.SIGNED


def _dict_at(value: Any, *path: str) -> JsonDict | None:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, dict) else None


# --- the procedure ------------------------------------------------------------------------


class JsonRequests(Protocol):
    """Authenticated JSON requests to the homeserver; failures raise MatrixError."""

    async def json(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any: ...


async def query_own_keys(requests: JsonRequests, user_id: str) -> JsonDict:
    answer = await requests.json("POST", _KEYS_QUERY, {"device_keys": {user_id: []}})
    return answer if isinstance(answer, dict) else {}


async def ensure_cross_signed(
    requests: JsonRequests,
    *,
    user_id: str,
    device_id: str,
    password: str | None,
    key_file: Path,
) -> CrossSigningState:
    """Make the server show this device signed by the bot's own cross-signing identity.

    Idempotent: with the keys on file and the device signed, it only queries. Returns
    the state the server shows afterwards. Failures of the uploads (no password where
    the server wants one, a refusal, an identity upload still failing after
    UPLOAD_ATTEMPTS tries) are logged and leave the device unsigned; network errors of
    the other requests (MatrixUnreachable) propagate for the caller's retry.
    """
    query = await query_own_keys(requests, user_id)
    keys = read_keys(key_file)
    published_master = _single_key(_dict_at(query, "master_keys", user_id))
    published_ssk = _single_key(_dict_at(query, "self_signing_keys", user_id))
    ours = keys is not None and (
        published_master == keys.master.public_key and published_ssk == keys.self_signing.public_key
    )
    if not ours:
        if keys is None:
            keys = CrossSigningKeys.generate()
            write_keys(key_file, keys)  # before the upload: a published key is never lost
        if published_master is not None:
            log.warning(
                "cross_signing.identity_replaced",
                user_id=user_id,
                reason="the published master key is not the one in the store directory",
            )
        body: JsonDict = {
            "master_key": keys.master_key(user_id),
            "self_signing_key": keys.self_signing_key(user_id),
        }
        if password is not None:
            body["auth"] = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": password,
            }
        try:
            # A few tries, then on without: a server that keeps failing this upload (a
            # 5xx seen from Synapse when an identity is replaced) must not keep the bot
            # from starting; it runs unsigned and says so.
            await retry(
                partial(requests.json, "POST", _DEVICE_SIGNING_UPLOAD, body),
                UPLOAD_BACKOFF,
                retry_on=(MatrixUnreachable, MatrixRateLimited),
                attempts=UPLOAD_ATTEMPTS,
                operation="cross_signing.upload",
            )
        except MatrixError as exc:
            log.error(
                "cross_signing.upload_refused",
                user_id=user_id,
                error=exc.errcode or str(exc.status),
                password=password is not None,
                consequence="the device stays unsigned: strict clients will not share keys",
            )
            return cross_signing_state(query, user_id, device_id)
        log.info("cross_signing.identity_uploaded", user_id=user_id, master=keys.master.public_key)
        query = await query_own_keys(requests, user_id)
    assert keys is not None
    device = _dict_at(query, "device_keys", user_id, device_id)
    if device is None:
        return CrossSigningState.NO_DEVICE_KEYS
    if not verify_signature(device, user_id, keys.self_signing.public_key):
        device = {k: v for k, v in device.items() if k != "unsigned"}
        signed_device = keys.self_signing.signed(device, user_id)
        answer = await requests.json(
            "POST", _SIGNATURES_UPLOAD, {user_id: {device_id: signed_device}}
        )
        failures = answer.get("failures") if isinstance(answer, dict) else None
        if failures:
            log.warning("cross_signing.signature_refused", device_id=device_id, failures=failures)
        else:
            log.info("cross_signing.device_signed", user_id=user_id, device_id=device_id)
        query = await query_own_keys(requests, user_id)
    return cross_signing_state(query, user_id, device_id)
