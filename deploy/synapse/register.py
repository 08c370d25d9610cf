"""One-shot job of the fullstack stack: register the bot and the test users on Synapse.

Uses the shared-secret admin API (runtime/dev/accounts.py, installed in the Synapse image
with the rest of our package) with the secret from Synapse's config, which this job
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

from runtime.dev.accounts import logout, register_or_login
from runtime.dev.errors import PasswordRefused, RegistrationError


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
    try:
        user, created = register_or_login(client, secret, localpart, password)
    except PasswordRefused as exc:
        raise RegistrationError(
            f"{exc}; remove the synapse-data volume or fix the password"
        ) from None
    if created:
        return "registered"
    # Log the new device out again: the job must leave no sessions behind.
    logout(client, user)
    return "exists"


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
    except (RegistrationError, httpx.HTTPError) as exc:
        print(f"register: failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
