"""Logging the bot's device in: the stored session, the device's crypto store on disk,
and the devices a new login leaves behind (see runtime/matrix/nio_adapter.py's docstring
for the rules: a configured token, a resumed session, a revoked token, a lost store).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any, Final

import anyio
import structlog

from contracts.matrix import JsonDict, MatrixAuthError, MatrixError
from runtime.matrix.cross_signing import query_own_keys
from runtime.matrix.parse import as_dict
from runtime.matrix.request import Call, PathOf, RawRequests
from runtime.matrix.session import SESSION_FILE, StoredSession, read_session, write_session

__all__ = ["DeviceLogin", "crypto_store_file", "private_files", "store_error", "store_pickle_key"]

log = structlog.get_logger(__name__)

STORE_KEY_FILE: Final = "store.key"


def crypto_store_file(store_path: Path, user_id: str, device_id: str) -> Path:
    """nio's crypto database for this device (DefaultStore's naming)."""
    return store_path / f"{user_id}_{device_id}.db"


def private_files(store_path: Path) -> None:
    """Make the store's files (nio creates its database with the umask) readable by us only."""
    for path in store_path.iterdir():
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)


def store_pickle_key(store_path: Path, passphrase: str | None) -> str:
    """The key that encrypts the crypto store: the passphrase, else a random kept one (0600)."""
    store_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if passphrase:
        return passphrase
    key_file = store_path / STORE_KEY_FILE
    try:
        return key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    log.info("e2ee.store_key_created", path=str(key_file))
    return key


def store_error(store_path: Path, error: Exception) -> Exception:
    """A crypto store that does not open: a wrong passphrase is fatal configuration."""
    if "pickle" in type(error).__name__.lower() or "pickle" in str(error).lower():
        return MatrixAuthError(
            f"MATRIX_STORE_PASSPHRASE does not open the crypto store in {store_path}: set "
            "the passphrase it was created with"
        )
    return error


class DeviceLogin:
    """Logs one ``nio.AsyncClient`` in as the bot's device (or resumes its session)."""

    def __init__(self, client: Any, raw: RawRequests, call: Call, path: PathOf) -> None:
        self.client = client
        self.raw = raw
        self.call = call
        self.path = path

    async def log_in(
        self,
        *,
        homeserver: str,
        user_id: str,
        password: str | None,
        access_token: str | None,
        store_path: Path,
        device_name: str,
    ) -> bool:
        """True when the stored (or configured) session was resumed without a login."""
        client = self.client
        session_path = store_path / SESSION_FILE
        if access_token:
            client.user_id, client.access_token = user_id, access_token
            device_id = await self.verify_whoami(user_id)
            if await self.store_lost(store_path, user_id, device_id):
                log.error(
                    "e2ee.store_lost_token_only",
                    user_id=user_id,
                    device_id=device_id,
                    fix="set MATRIX_PASSWORD (the bot then logs in as a new device) or "
                    "configure an access token of a new device",
                )
            self.open_store(store_path, user_id, device_id, access_token)
            log.info("matrix.login.token", user_id=user_id, device_id=device_id)
            return True

        stored = await anyio.to_thread.run_sync(read_session, session_path)
        device_id = ""
        old_device: str | None = None
        if stored is not None and stored.matches(user_id=user_id, homeserver=homeserver):
            device_id = stored.device_id
            client.user_id, client.access_token = user_id, stored.access_token
            try:
                await self.verify_whoami(user_id)
            except MatrixAuthError as exc:
                if password is None or exc.errcode != "M_UNKNOWN_TOKEN":
                    raise
                log.warning("matrix.session.token_rejected", user_id=user_id, device_id=device_id)
            else:
                lost = await self.store_lost(store_path, user_id, device_id)
                if not lost or password is None:
                    if lost:
                        log.error(
                            "e2ee.store_lost_no_password",
                            user_id=user_id,
                            device_id=device_id,
                            fix="set MATRIX_PASSWORD so the bot can log in as a new device",
                        )
                    self.open_store(store_path, user_id, device_id, stored.access_token)
                    log.info("matrix.session.restored", user_id=user_id, device_id=device_id)
                    return True
                log.warning(
                    "e2ee.store_lost",
                    user_id=user_id,
                    device_id=device_id,
                    action="logging in as a new device; old encrypted history stays unreadable",
                )
                old_device, device_id = device_id, ""

        if password is None:
            raise MatrixAuthError(
                f"no usable session in {session_path} and no password or access token "
                f"configured for {user_id}"
            )
        if device_id and not crypto_store_file(store_path, user_id, device_id).exists():
            # The old device's token was revoked and its store is gone too: it cannot be
            # reused once it has keys on the server, and we cannot ask without a token.
            old_device, device_id = device_id, ""
        # Without a token in the header, and with the old device id so the device (and
        # the transaction ids the server remembers for it) stays the same. nio opens
        # the crypto store when the login answer arrives.
        client.access_token = ""
        client.device_id = device_id
        try:
            response = await self.call(client.login(password, device_name=device_name), login=True)
        except MatrixError:
            raise
        except Exception as exc:
            raise store_error(store_path, exc) from exc
        if response.user_id != user_id:
            raise MatrixAuthError(f"logged in as {response.user_id}, expected {user_id}")
        session = StoredSession(
            user_id=user_id,
            device_id=str(response.device_id),
            access_token=str(response.access_token),
            homeserver=homeserver,
        )
        await anyio.to_thread.run_sync(write_session, session_path, session)
        log.info("matrix.login.password", user_id=user_id, device_id=session.device_id)
        stale = await self.stale_devices(
            session.device_id, device_name=device_name, known=old_device
        )
        for device in stale:
            await self.delete_device(device, user_id=user_id, password=password)
        return False

    def open_store(self, store_path: Path, user_id: str, device_id: str, token: str) -> None:
        """Load (or create) the device's crypto store; a wrong passphrase is fatal."""
        try:
            self.client.restore_login(user_id, device_id, token)
        except Exception as exc:
            raise store_error(store_path, exc) from exc

    async def store_lost(self, store_path: Path, user_id: str, device_id: str) -> bool:
        """The device has keys on the server but no crypto store here (it cannot be reused)."""
        if crypto_store_file(store_path, user_id, device_id).exists():
            return False
        query = await query_own_keys(self.raw, user_id)
        devices = as_dict(as_dict(query.get("device_keys")).get(user_id))
        return device_id in devices

    async def stale_devices(
        self, current: str, *, device_name: str, known: str | None
    ) -> list[str]:
        """Earlier devices of this bot that a new login leaves behind.

        The device whose store was lost (`known`), and, when ``session.json`` was lost
        too, the other devices with the bot's device name: their keys are gone with the
        store, and clients would keep encrypting for them.
        """
        stale = [known] if known and known != current else []
        try:
            body = as_dict(await self.raw.json("GET", self.path("devices")))
        except MatrixError as exc:
            log.info("matrix.devices_unlisted", error=str(exc))
            return stale
        for device in body.get("devices") or ():
            device = as_dict(device)
            device_id = device.get("device_id")
            if (
                isinstance(device_id, str)
                and device_id not in (current, known)
                and device.get("display_name") == device_name
            ):
                stale.append(device_id)
        return stale

    async def delete_device(self, device_id: str, *, user_id: str, password: str) -> None:
        """Delete the bot's old device (password UIA); a failure is logged, not fatal."""
        body: JsonDict = {
            "devices": [device_id],
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": password,
            },
        }
        try:
            await self.raw.json("POST", self.path("delete_devices"), body)
        except MatrixError as exc:
            log.warning("matrix.old_device_not_deleted", device_id=device_id, error=str(exc))
        else:
            log.info("matrix.old_device_deleted", device_id=device_id)

    async def verify_whoami(self, user_id: str) -> str:
        """Check the token is the bot's; returns the token's device id."""
        response = await self.call(self.client.whoami())
        if response.user_id != user_id:
            raise MatrixAuthError(f"the access token belongs to {response.user_id}, not {user_id}")
        return str(response.device_id or "")
