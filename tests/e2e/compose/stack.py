"""Driving the fullstack compose project from tests: compose commands, ports, users."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from runtime.dev.accounts import RegisteredUser

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.fullstack.yml"
USERS_ENV = REPO / "deploy" / "fullstack" / "users.env"
BOT_ENV = REPO / "deploy" / "fullstack" / "bot.env"
RESULTS = Path(os.environ.get("SURFACE_E2E_RESULTS", REPO / ".local" / "e2e-results"))
COMPOSE_DIR = Path(__file__).parent

# The image each service runs, by the variable that can rename it (see the compose file).
IMAGES = {
    "SURFACE_IMAGE": "lambda-surface/bot:local",
    "PLATFORM_AGENT_IMAGE": "lambda-surface/platform-agent:local",
    "SYNAPSE_IMAGE": "lambda-surface/synapse:local",
}
UP_TIMEOUT_S = 240


# --- the stack ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Compose:
    """`docker compose` for one project of the fullstack file (thin, blocking)."""

    project: str
    file: Path = COMPOSE_FILE

    def run(self, *args: str, timeout: float = 300.0, check: bool = True) -> str:
        command = ["docker", "compose", "-f", str(self.file), "-p", self.project, *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def up(self, *services: str, no_deps: bool = False) -> None:
        """Create/start services and wait until every one is healthy (or a job is done)."""
        deps = ["--no-deps"] if no_deps else []
        self.run(
            "up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), "--pull", "never",
            *deps, *services, timeout=UP_TIMEOUT_S + 60,
        )  # fmt: skip

    def port(self, service: str, container_port: int) -> int:
        """The loopback port published for `service` now (it changes when recreated)."""
        endpoint = self.run("port", service, str(container_port)).strip().splitlines()[-1]
        return int(endpoint.rsplit(":", 1)[1])

    def container_id(self, service: str) -> str:
        return self.run("ps", "-a", "-q", service).strip()

    def health(self, service: str) -> str:
        result = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.container_id(service)],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    def wait_healthy(self, service: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health(service)) != "healthy":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} not healthy after {timeout:.0f} s ({status})")
            time.sleep(0.2)

    def volume(self, name: str) -> str:
        """The engine's name of the project volume `name` (as in the compose file)."""
        return f"{self.project}_{name}"

    def services(self) -> list[str]:
        return self.run("config", "--services").split()

    def save_logs(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ps.txt").write_text(self.run("ps", "-a", check=False))
        for service in self.services():
            logs = self.run("logs", "--no-color", "--timestamps", service, check=False)
            (directory / f"{service}.log").write_text(logs)
        return directory


@dataclass(frozen=True)
class Stack:
    compose: Compose
    bot_user_id: str

    def synapse_url(self) -> str:
        return f"http://127.0.0.1:{self.compose.port('synapse', 8008)}"

    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.compose.port('bot', 8080)}"


# --- test users ----------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def registered_users() -> dict[str, str]:
    """localpart -> password of the users the `register` job created."""
    pairs = env_file(USERS_ENV)["FULLSTACK_TEST_USERS"].split(",")
    return dict(pair.split(":", 1) for pair in pairs)


def login(stack: Stack, localpart: str) -> RegisteredUser:
    """Log a registered test user in with its password (a new device each time)."""
    password = registered_users()[localpart]
    response = httpx.post(
        f"{stack.synapse_url()}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        },
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return RegisteredUser(
        user_id=body["user_id"],
        password=password,
        access_token=body["access_token"],
        device_id=body["device_id"],
    )
