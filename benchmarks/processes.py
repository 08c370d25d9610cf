"""The child processes of a benchmark run: the bot, the platform-agent, the proxy, the raw echo.

The bot is the e2e tests' BotProcess (runtime/dev/bot.py) with a finer /ready poll,
start timestamps and RSS readings; the others are `Child`: a `python -m ...` child
(runtime/dev/process.py) that is waited for until it answers and stopped with SIGTERM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio

from runtime.dev.accounts import RegisteredUser
from runtime.dev.bot import BotProcess
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.process import ChildProcess, find_free_port

READY_POLL_S = 0.02
REPO = Path(__file__).resolve().parents[1]


def proc_status_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM, ...) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"{key} not in /proc/{pid}/status")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class BenchBot(BotProcess):
    """`surface run` as in the e2e tests; `homeserver_url` may point at the counting proxy."""

    def __init__(
        self,
        synapse: LocalHomeserver,
        bot: RegisteredUser,
        workdir: Path,
        *,
        registry: Path | None = None,
        homeserver_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            # The production default: one edit per second at most while streaming.
            "SURFACE_STREAM_EDIT_INTERVAL": "1.0",
            **(extra_env or {}),
        }
        if homeserver_url is not None:
            env["MATRIX_HOMESERVER"] = homeserver_url
        super().__init__(synapse, bot, workdir, registry=registry, extra_env=env)
        # As in the production image (deploy/Dockerfile: UV_COMPILE_BYTECODE=1), the bot
        # runs from compiled bytecode: with PYTHONDONTWRITEBYTECODE=1 from the shell, every
        # start would compile each module again (seconds of CPU, measured as start-up).
        # The first start of a run writes the caches; measured starts come after warm-ups.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmRSS")

    def peak_rss_mb(self) -> float:
        return proc_status_mb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    async def wait_ready_async(self, within: float = 600.0) -> float:
        """Poll /ready every 20 ms; returns the monotonic time it first answered 200."""
        return await self.wait_http_async(self.url + "/ready", within=within, poll_s=READY_POLL_S)

    async def start_ready(self) -> float:  # type: ignore[override]
        """Start and wait for /ready; returns the seconds from start to ready."""
        self.start()
        ready_at = await self.wait_ready_async()
        return ready_at - self.started_at

    async def stop_async(self) -> float:
        """SIGTERM and wait; returns the seconds the graceful shutdown took."""
        started = time.monotonic()
        await anyio.to_thread.run_sync(self.stop)
        return time.monotonic() - started

    def delete_database(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)


class Child(ChildProcess):
    """A `python -m <module>` helper process with its output in a log file, started at once."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(
            [sys.executable, "-m", module, *args],
            log_path=log_path,
            name=log_path.name,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,  # `benchmarks` is imported from the checkout, not installed
        )
        self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_log(self, needle: str, within: float = 60.0) -> None:
        """Wait until the process printed `needle` (its own 'ready' line)."""
        with anyio.fail_after(within):
            while needle not in self.log_text():
                self.check_alive()
                await anyio.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; past `timeout`, SIGKILL (without an error: it is a helper)."""
        try:
            return super().stop(timeout)
        except subprocess.TimeoutExpired:
            return self.returncode


async def start_proxy(upstream: str, log: Path, workdir: Path) -> tuple[Child, str]:
    """The counting proxy (benchmarks/proxy.py) in front of `upstream`; returns it and its URL."""
    port = find_free_port("127.0.0.1")
    child = Child(
        "benchmarks.proxy",
        ["--port", str(port), "--upstream", upstream, "--log", str(log)],
        {},
        workdir / f"{log.stem}.out",
    )
    await child.wait_log("proxy ready")
    return child, f"http://127.0.0.1:{port}"


async def start_platform_agent(workdir: Path) -> tuple[Child, str]:
    """The reference platform-agent service with its echo backend; returns it and its URL."""
    port = find_free_port("127.0.0.1")
    await anyio.Path(workdir).mkdir(parents=True, exist_ok=True)
    child = Child(
        "platform_agent",
        [],
        {
            "PLATFORM_AGENT_HOST": "127.0.0.1",
            "PLATFORM_AGENT_PORT": str(port),
            "PLATFORM_AGENT_DB": str(workdir / "platform_agent.db"),
            "PLATFORM_AGENT_BACKEND": "echo",
            "PLATFORM_AGENT_WORKSPACE": str(workdir / "workspace"),
        },
        workdir / "platform_agent.log",
    )
    url = f"http://127.0.0.1:{port}"
    await child.wait_http_async(url + "/health", within=60.0)
    return child, url


async def start_raw_echo(homeserver: str, user: RegisteredUser, workdir: Path) -> Child:
    """The baseline raw nio echo client (benchmarks/raw_echo.py), logged in as `user`."""
    child = Child(
        "benchmarks.raw_echo",
        [],
        {
            "RAW_ECHO_HOMESERVER": homeserver,
            "RAW_ECHO_USER_ID": user.user_id,
            "RAW_ECHO_DEVICE_ID": user.device_id,
            "RAW_ECHO_TOKEN": user.access_token,
        },
        workdir / "raw_echo.log",
    )
    await child.wait_log("raw echo ready")
    return child
