"""Register-or-login on a Synapse through its shared-secret admin API.

Used by the local homeserver launcher (``LocalHomeserver.register_user``: the embedded
``surface run``, ``surface dev-homeserver``, e2e tests, benchmarks) and by the fullstack
stack's one-shot register job (``deploy/synapse/register.py``, run in the Synapse image,
which installs this package).

The calls are synchronous and short; async callers run them with
``anyio.to_thread.run_sync``. Nothing here logs: the callers say what was done.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import httpx

from runtime.dev.errors import PasswordRefused, RegistrationError

__all__ = ["RegisteredUser", "logout", "register_or_login", "registration_mac"]

REGISTER_PATH = "/_synapse/admin/v1/register"
LOGIN_PATH = "/_matrix/client/v3/login"
LOGOUT_PATH = "/_matrix/client/v3/logout"


@dataclass(frozen=True)
class RegisteredUser:
    """A user on the homeserver with a fresh access token and its device."""

    user_id: str
    password: str = field(repr=False)
    access_token: str = field(repr=False)
    device_id: str


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 that Synapse's shared-secret register API expects (pure)."""
    message = "\x00".join((nonce, username, password, "admin" if admin else "notadmin"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()


def register_or_login(
    client: httpx.Client, secret: str, localpart: str, password: str, *, admin: bool = False
) -> tuple[RegisteredUser, bool]:
    """Register ``localpart``; if it exists, log in with ``password`` instead.

    ``client`` has the homeserver as its base URL. Returns the user with a new device
    and token, and whether it was created (the admin flag of an existing user is left
    unchanged). Raises PasswordRefused if the user exists and the login is refused,
    RegistrationError if Synapse refuses anything else; httpx.HTTPError if it cannot
    be reached.
    """
    nonce_response = client.get(REGISTER_PATH)
    _raise_for_status(nonce_response, "get a registration nonce", localpart)
    nonce = str(nonce_response.json()["nonce"])
    body = {
        "nonce": nonce,
        "username": localpart,
        "password": password,
        "admin": admin,
        "mac": registration_mac(secret, nonce, localpart, password, admin),
    }
    response = client.post(REGISTER_PATH, json=body)
    created = True
    if response.status_code == 400 and _errcode(response) == "M_USER_IN_USE":
        created = False
        response = client.post(
            LOGIN_PATH,
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            },
        )
        if response.status_code != 200:
            raise PasswordRefused(
                f"{localpart!r} exists but its password is refused: "
                f"HTTP {response.status_code} {response.text[:500]}"
            )
    else:
        _raise_for_status(response, "register", localpart)
    payload = response.json()
    user = RegisteredUser(
        user_id=str(payload["user_id"]),
        password=password,
        access_token=str(payload["access_token"]),
        device_id=str(payload["device_id"]),
    )
    return user, created


def logout(client: httpx.Client, user: RegisteredUser) -> None:
    """End the session (the device) of ``user``'s access token; its answer is not checked."""
    client.post(LOGOUT_PATH, headers={"Authorization": f"Bearer {user.access_token}"})


def _errcode(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("errcode")) if isinstance(body, dict) else None


def _raise_for_status(response: httpx.Response, action: str, localpart: str) -> None:
    if response.status_code == 200:
        return
    # Synapse error bodies carry errcode/error only, never the password or a token.
    raise RegistrationError(
        f"could not {action} {localpart!r}: HTTP {response.status_code} {response.text[:500]}"
    )
