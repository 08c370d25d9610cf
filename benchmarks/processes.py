"""The child processes of a benchmark run: the bot, the platform-agent, the proxy, the raw echo.

The bot is the e2e harness's BotProcess (tests/e2e/harness.py) with a finer /ready
poll, start timestamps and RSS readings; the others are small wrappers that start a
`python -m ...` child, wait until it answers, and stop it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

from runtime.dev_homeserver import LocalHomeserver, RegisteredUser, find_free_port
from tests.e2e.harness import BotDied, BotProcess

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
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            with anyio.fail_after(within):
                while True:
                    if self.returncode is not None:
                        raise BotDied(f"bot exited ({self.returncode}):\n{self.log_tail()}")
                    try:
                        if (await http.get(self.url + "/ready")).status_code == 200:
                            return time.monotonic()
                    except httpx.HTTPError:
                        pass
                    await anyio.sleep(READY_POLL_S)
        raise AssertionError("unreachable")  # pragma: no cover

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


class Child:
    """A `python -m <module>` helper process with its output in a log file."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,  # `benchmarks` is imported from the checkout, not installed
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _died(self) -> RuntimeError:
        return RuntimeError(
            f"{self.log_path.name}: exit {self.proc.returncode}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_log(self, needle: str, within: float = 60.0) -> None:
        """Wait until the process printed `needle` (its own 'ready' line)."""
        with anyio.fail_after(within):
            while needle not in (
                self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            ):
                if self.proc.poll() is not None:
                    raise self._died()
                await anyio.sleep(0.05)

    async def wait_http(self, url: str, within: float = 60.0) -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            with anyio.fail_after(within):
                while True:
                    if self.proc.poll() is not None:
                        raise self._died()
                    try:
                        if (await http.get(url)).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await anyio.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
    await child.wait_http(url + "/health")
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
