"""The reference platform-agent (`python -m platform_agent`) as a real process in e2e tests.

`PlatformProcess` owns one service: a free loopback port, its own SQLite
memory file and workspace under `workdir`, its log in `workdir/platform.log`; the
process handling (start, wait, stop, log tail) is `runtime.dev.process.ChildProcess`.
It can be stopped gracefully (SIGTERM), killed (SIGKILL), frozen (SIGSTOP, a
hung platform that still accepts connections) and started again on the same
port with the same memory. `context()` asks the service directly, so a test
can check what the platform remembers without going through the bot.

(The module name shadows the standard library's `platform` only for code run
with tests/e2e as its working directory; pytest imports the standard one first.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from contracts.platform import ContextInfo
from contracts.wire import WIRE_VERSION, WIRE_VERSION_HEADER
from runtime.dev.process import ChildExited, ChildProcess, find_free_port

_OWN_ENV_PREFIXES = ("PLATFORM_AGENT_", "OPENAI_")


class PlatformDied(ChildExited):
    """The platform-agent process exited while a test waited for it."""


class PlatformProcess(ChildProcess):
    """`python -m platform_agent` with the echo backend, as a child process."""

    exited_error = PlatformDied

    def __init__(
        self,
        workdir: Path,
        *,
        workspace: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = find_free_port("127.0.0.1")
        self.db_path = workdir / "platform_agent.db"
        self.workspace = workspace if workspace is not None else workdir / "workspace"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES)},
            "PLATFORM_AGENT_HOST": "127.0.0.1",
            "PLATFORM_AGENT_PORT": str(self.port),
            "PLATFORM_AGENT_DB": str(self.db_path),
            "PLATFORM_AGENT_WORKSPACE": str(self.workspace),
            "PLATFORM_AGENT_BACKEND": "echo",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(extra_env or {})
        super().__init__(
            [sys.executable, "-m", "platform_agent"],
            log_path=workdir / "platform.log",
            name="platform-agent",
            cwd=workdir,
            env=env,
        )
        self.env: dict[str, str] = env
        workdir.mkdir(parents=True, exist_ok=True)
        self.workspace.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def registry_entry(self, agent_id: str = "ref", **fields: Any) -> str:
        """One `agents:` list item (YAML flow style) for an http agent served here."""
        entry = {"id": agent_id, "name": agent_id.title(), "backend": "http", "url": self.url}
        entry.update(fields)
        return "  - " + json.dumps(entry)  # JSON is YAML

    # -- lifecycle (start, stop, kill, log_text, log_tail: ChildProcess) ---------------------

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until `GET /health` answers 200; raises PlatformDied or TimeoutError."""
        self.wait_http(self.url + "/health", timeout=timeout, what="healthy")

    def start_healthy(self) -> None:
        self.start()
        self.wait_healthy()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait: uvicorn shuts down gracefully and closes the database."""
        return super().stop(timeout)

    def restart(self) -> None:
        """Stop (gracefully) and start again on the same port, with the same memory."""
        self.stop()
        self.start_healthy()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hung platform)."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `freeze` (harmless otherwise; `stop` sends it too)."""
        self.send_signal(signal.SIGCONT)

    # -- asking the service directly ---------------------------------------------------------

    def context(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        """What the service remembers of one platform chat (`POST /v1/context`)."""
        response = httpx.post(
            self.url + "/v1/context",
            json={"agent_id": agent_id, "platform_chat_id": platform_chat_id},
            headers={WIRE_VERSION_HEADER: WIRE_VERSION},
            timeout=10,
        )
        response.raise_for_status()
        return ContextInfo.model_validate_json(response.content)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The service's structured log lines named `event` (its logs are JSON off a tty)."""
        found: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # uvicorn's own lines are plain text
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found


@contextmanager
def running_platform(workdir: Path, **kwargs: Any) -> Iterator[PlatformProcess]:
    """A healthy PlatformProcess for the duration of the block; killed afterwards."""
    service = PlatformProcess(workdir, **kwargs)
    service.start_healthy()
    try:
        yield service
    finally:
        service.kill()
