"""`surface run` as a real child process against a local Synapse (e2e tests and benchmarks).

``BotProcess`` owns one bot: its account, a free loopback port for the HTTP endpoints,
its database, Matrix store and workspace under ``workdir``, its JSON log in
``workdir/bot.log``. It can be started, stopped gracefully (SIGTERM), killed (SIGKILL)
and started again with the same state; ``env`` may be changed between runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runtime.dev.accounts import RegisteredUser
from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.process import ChildExited, ChildProcess, find_free_port

__all__ = ["BotDied", "BotProcess"]


class BotDied(ChildExited):
    """The bot process exited while it was waited for."""


class BotProcess(ChildProcess):
    """`surface run` as a real child process against the test Synapse."""

    exited_error = BotDied

    def __init__(
        self,
        synapse: LocalHomeserver,
        bot: RegisteredUser,
        workdir: Path,
        *,
        registry: Path | None = None,
        backend: str = "asyncio",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.synapse = synapse
        self.bot = bot
        self.workdir = workdir
        self.backend = backend
        self.port = find_free_port("127.0.0.1")
        self.db_path = workdir / "db" / "lambda_matrix.db"
        self.store_path = workdir / "matrix_store"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MATRIX_", "SURFACE_"))},
            "MATRIX_HOMESERVER": synapse.base_url,
            "MATRIX_USER_ID": bot.user_id,
            "MATRIX_PASSWORD": bot.password,
            "MATRIX_DB_PATH": str(self.db_path),
            "MATRIX_STORE_PATH": str(self.store_path),
            "SURFACE_WORKSPACE_DIR": str(workdir / "workspace"),
            "SURFACE_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "SURFACE_LOG_FORMAT": "json",
            "SURFACE_LOG_LEVEL": "info",
            "SURFACE_ALLOWED_USERS": f"@*:{synapse.server_name}",
            "SURFACE_STREAM_EDIT_INTERVAL": "0.2",
            # The nio test users here have no crypto: plain rooms unless a test asks
            # (extra_env SURFACE_ENCRYPT_ROOMS=true; tests/e2e/test_e2ee*.py).
            "SURFACE_ENCRYPT_ROOMS": "false",
            "PYTHONUNBUFFERED": "1",
        }
        if registry is not None:
            env["SURFACE_AGENT_REGISTRY"] = str(registry)
        env.update(extra_env or {})
        super().__init__(
            [sys.executable, "-m", "runtime.cli", "run", "--backend", backend],
            log_path=workdir / "bot.log",
            name="bot",
            cwd=workdir,
            env=env,
        )
        self.env: dict[str, str] = env
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until ``/ready`` answers 200; raises BotDied or TimeoutError (with the log tail)."""
        self.wait_http(self.url + "/ready", timeout=timeout, what="ready")

    def start_ready(self) -> None:
        self.start()
        self.wait_ready()
