"""A child process of the dev and test tooling: start, wait until it answers, stop, log tail.

One ``ChildProcess`` runs one command line at a time, its stdout and stderr appended to
one log file (so a restarted process keeps the earlier run's lines above the new ones).
The local Synapse, the bot in e2e tests and benchmarks, the reference platform-agent and
the benchmarks' helper processes are all one of these.

Waiting is by polling an HTTP endpoint on loopback until it answers 200 (never by
sleeping a fixed time); a child that exits meanwhile raises ``ChildExited`` (or the
subclass named by ``exited_error``) with the tail of its log at once.

Stopping is SIGTERM, then up to ``timeout`` seconds for a graceful exit; a child that
overruns it is SIGKILLed and reaped, and ``stop`` raises ``subprocess.TimeoutExpired`` so
a hung shutdown is never silent. Callers that want the kill without the error catch it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Final

import anyio
import httpx

__all__ = ["ChildExited", "ChildProcess", "find_free_port", "port_is_free"]

LOG_TAIL_LINES: Final = 60
_PROBE_TIMEOUT_S: Final = 2.0


class ChildExited(Exception):
    """The child process exited while it was waited for."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def find_free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently free TCP port on ``host``.

    Another process may take it before the child binds it; a child started on a taken
    port exits (or its launcher refuses, see ``port_is_free``) rather than talking to
    the wrong server.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound right now."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class ChildProcess:
    """One command line as a child process, its output appended to ``log_path``.

    ``env=None`` inherits this process's environment; ``env`` is read at every
    ``start()``, so a caller may change it between runs. ``new_session=True`` puts the
    child in its own session, so a Ctrl-C in the terminal reaches only us and we decide
    when the child stops. stdin is always /dev/null.
    """

    exited_error: ClassVar[type[ChildExited]] = ChildExited

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name
        self.cwd = cwd
        self.env = env
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """None while running (or before the first start), else the exit status."""
        return None if self.proc is None else self.proc.poll()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the child. Raises RuntimeError if it is already running."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )

    def check_alive(self) -> None:
        """Raise ``exited_error`` (with the log tail) unless the child is running."""
        if not self.is_running():
            raise self.exited_error(
                f"{self.name} exited ({self.returncode}):\n{self.log_tail()}", self.returncode
            )

    def wait_http(
        self, url: str, *, timeout: float, poll_s: float = 0.1, what: str = "ready"
    ) -> None:
        """Block until ``GET url`` answers 200.

        Raises ``exited_error`` if the child exits first, TimeoutError (with the log
        tail) once ``timeout`` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=_PROBE_TIMEOUT_S, trust_env=False) as client:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{self.name} not {what} after {timeout}s:\n{self.log_tail()}"
                    )
                time.sleep(poll_s)

    async def wait_http_async(self, url: str, *, within: float, poll_s: float = 0.05) -> float:
        """``wait_http`` for an event loop; returns the monotonic time of the first 200.

        Raises ``exited_error`` if the child exits first, TimeoutError after ``within`` s.
        """
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S, trust_env=False) as http:
            with anyio.fail_after(within):
                while True:
                    self.check_alive()
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(url)).status_code == 200:
                            return time.monotonic()
                    await anyio.sleep(poll_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the child is running (a no-op otherwise)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (after a SIGCONT, in case it was frozen) and wait; returns the exit status.

        Past ``timeout`` the child is SIGKILLed and reaped, then TimeoutExpired is raised.
        Idempotent: a child that is not running returns its status at once.
        """
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL at once and reap: no clean-up at all. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        """Everything the child (all its runs) wrote so far; empty before the first start."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log, without a trailing newline."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines)).rstrip("\n")
        except FileNotFoundError:
            return ""
