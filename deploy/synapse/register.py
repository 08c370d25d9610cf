"""One-shot job of the fullstack stack: register the bot and the test users on Synapse.

Uses the shared-secret admin API with the secret from Synapse's config, which this job
reads from the Synapse data volume (mounted read-only), so no secret is written into the
compose files. Idempotent: a user that exists is checked by logging in with its password.
Exits non-zero (failing the job, so the bot never starts) if a user can be neither
registered nor logged in.

Environment:
    SYNAPSE_URL              http://synapse:8008
    SYNAPSE_CONFIG           /data/homeserver.yaml
    MATRIX_USER_ID           the bot (@localpart:server), with MATRIX_PASSWORD
    FULLSTACK_TEST_USERS     comma-separated localpart:password pairs
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import yaml

from runtime.dev_homeserver import registration_mac


class RegisterError(Exception):
    """A user could be neither registered nor logged in."""


def wanted_users(env: dict[str, str]) -> list[tuple[str, str]]:
    """The (localpart, password) pairs to register: the bot first, then the test users."""
    users: list[tuple[str, str]] = []
    bot_id = env.get("MATRIX_USER_ID", "")
    if bot_id:
        users.append((bot_id.removeprefix("@").split(":", 1)[0], env["MATRIX_PASSWORD"]))
    for pair in env.get("FULLSTACK_TEST_USERS", "").split(","):
        if pair.strip():
            localpart, _, password = pair.strip().partition(":")
            users.append((localpart, password))
    return users


def register(client: httpx.Client, secret: str, localpart: str, password: str) -> str:
    """Register `localpart` or, if it exists, prove the password works. Returns what was done."""
    nonce = client.get("/_synapse/admin/v1/register").raise_for_status().json()["nonce"]
    body = {
        "nonce": nonce,
        "username": localpart,
        "password": password,
        "admin": False,
        "mac": registration_mac(secret, nonce, localpart, password, False),
    }
    response = client.post("/_synapse/admin/v1/register", json=body)
    if response.status_code == 200:
        return "registered"
    if response.status_code == 400 and response.json().get("errcode") == "M_USER_IN_USE":
        login = client.post(
            "/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            },
        )
        if login.status_code == 200:
            # Log the new device out again: the job must leave no sessions behind.
            token = login.json()["access_token"]
            client.post("/_matrix/client/v3/logout", headers={"Authorization": f"Bearer {token}"})
            return "exists"
        raise RegisterError(
            f"{localpart} exists but its password is refused (HTTP {login.status_code}); "
            "remove the synapse-data volume or fix the password"
        )
    raise RegisterError(f"could not register {localpart}: HTTP {response.status_code}")


def main() -> int:
    env = dict(os.environ)
    url = env.get("SYNAPSE_URL", "http://synapse:8008")
    config_path = Path(env.get("SYNAPSE_CONFIG", "/data/homeserver.yaml"))
    secret = str(yaml.safe_load(config_path.read_text())["registration_shared_secret"])
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            for localpart, password in wanted_users(env):
                outcome = register(client, secret, localpart, password)
                print(f"register: {localpart}: {outcome}", flush=True)
    except (RegisterError, httpx.HTTPError) as exc:
        print(f"register: failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
