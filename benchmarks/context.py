"""What every scenario of a run shares: the one Synapse, user registration, a work dir."""

from __future__ import annotations

import itertools
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nio

from runtime.dev.accounts import RegisteredUser
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.user import UserClient

_numbers = itertools.count(1)


def say(message: str) -> None:
    """Progress on stderr (results go to files)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class BenchContext:
    synapse: LocalHomeserver
    workdir: Path
    clients: list[nio.AsyncClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.synapse.base_url

    def register(self, prefix: str) -> RegisteredUser:
        """A new user with a unique localpart (blocking: about 30 ms)."""
        localpart = f"{prefix}-{next(_numbers)}"
        return self.synapse.register_user(localpart, secrets.token_urlsafe(16))

    async def register_async(self, prefix: str) -> RegisteredUser:
        return await anyio.to_thread.run_sync(self.register, prefix)

    async def login(self, user: RegisteredUser) -> UserClient:
        """The e2e tests' test user (used for onboarding), closed at the end of the run."""
        client = await UserClient.login(self.base_url, user)
        self.clients.append(client.client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
