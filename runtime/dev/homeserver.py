"""A local Synapse homeserver for development, the embedded `surface run` default, e2e tests
and benchmarks.

Synapse runs as a child process of the same Python interpreter (it is installed in the
project's venv through the ``synapse`` dependency group), on SQLite, listening on loopback
only, with federation off and every rate limit raised so tests are never throttled.

The API is synchronous on purpose: pytest fixtures and the CLI both drive it from plain
threads, and a child process needs no event loop. ``register_user`` is a short blocking
HTTP call (``runtime.dev.accounts``); async callers should run it with
``anyio.to_thread.run_sync``. The process itself is a ``runtime.dev.process.ChildProcess``.

Exceptions: see ``runtime.dev.errors`` (re-exported here).

Retried vs fatal: ``wait_healthy`` retries connection errors and non-200 answers until its
deadline (Synapse is still binding its port); everything else is fatal and raised at once,
because a local homeserver that misbehaves is a setup problem a retry will not fix.
"""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self

import httpx
import structlog
import yaml

from runtime.dev.accounts import RegisteredUser, register_or_login
from runtime.dev.errors import (
    DevHomeserverError,
    HomeserverStartError,
    PasswordRefused,
    RegistrationError,
)
from runtime.dev.process import ChildExited, ChildProcess, find_free_port, port_is_free

__all__ = [
    "RATE_LIMITS",
    "DevHomeserverError",
    "HomeserverConfig",
    "HomeserverStartError",
    "LocalHomeserver",
    "PasswordRefused",
    "RegisteredUser",
    "RegistrationError",
    "dev_config",
    "generate_config",
    "main_dev_homeserver",
]

log = structlog.get_logger(__name__)

CONFIG_FILE: Final = "homeserver.yaml"
LOG_CONFIG_FILE: Final = "log.config"
SYNAPSE_LOG_FILE: Final = "synapse.log"
_LOG_TAIL_LINES: Final = 30
_STOP_GRACE_S: Final = 10.0
_HTTP_TIMEOUT_S: Final = 10.0

_GENEROUS: Final[dict[str, int]] = {"per_second": 1000, "burst_count": 10000}

# Every limiter read by synapse/config/ratelimiting.py (Synapse 1.163). Local tests create
# rooms, invite, join and log in far faster than any human, and Synapse's defaults
# throttle them within seconds. `remote_media_download_*` is left alone: no federation.
RATE_LIMITS: Final[dict[str, Any]] = {
    "rc_message": _GENEROUS,
    "rc_registration": _GENEROUS,
    "rc_registration_token_validity": _GENEROUS,
    "rc_login": {"address": _GENEROUS, "account": _GENEROUS, "failed_attempts": _GENEROUS},
    "rc_admin_redaction": _GENEROUS,
    "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
    "rc_joins_per_room": _GENEROUS,
    "rc_key_requests": _GENEROUS,
    "rc_3pid_validation": _GENEROUS,
    "rc_invites": {"per_room": _GENEROUS, "per_user": _GENEROUS, "per_issuer": _GENEROUS},
    "rc_third_party_invite": _GENEROUS,
    "rc_media_create": _GENEROUS,
    "rc_presence": {"per_user": _GENEROUS},
    "rc_delayed_event_mgmt": _GENEROUS,
    "rc_room_creation": _GENEROUS,
    "rc_reports": _GENEROUS,
    "rc_user_directory": _GENEROUS,
    "rc_profile": _GENEROUS,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 10000,
        "sleep_delay": 500,
        "reject_limit": 10000,
        "concurrent": 100,
    },
}


@dataclass(frozen=True)
class HomeserverConfig:
    """Where and how the local Synapse runs. ``port=0`` picks a free port at start.

    ``overrides``: top-level keys of homeserver.yaml set over the dev configuration, on
    every start (a test's own limits, e.g. ``{"rc_message": {"per_second": 0.5,
    "burst_count": 2}}`` rate limits every user's messages).
    """

    data_dir: Path
    port: int = 8008
    host: str = "127.0.0.1"
    server_name: str = "localhost"
    overrides: Mapping[str, Any] = field(default_factory=dict)


# --- configuration ------------------------------------------------------------------------


def generate_config(cfg: HomeserverConfig) -> Path:
    """Write ``data_dir/homeserver.yaml`` for a loopback-only, federation-less dev Synapse.

    A new file gets the full dev configuration (see module docstring). An existing file is
    kept as the user may have edited it: only the listener (and ``cfg.overrides``) are
    re-applied so a reused data dir can run on a new host/port, and a missing
    ``registration_shared_secret`` is added; an existing secret is never rotated.
    ``port=0`` picks a free port.

    Raises HomeserverStartError if Synapse's own config generator fails.
    Returns the path of the config file.
    """
    data_dir = cfg.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if cfg.port == 0:
        cfg = replace(cfg, port=find_free_port(cfg.host))
    path = data_dir / CONFIG_FILE
    if path.exists():
        config = _load_yaml(path)
        config["listeners"] = [_listener(cfg)]
        config.update(cfg.overrides)
        config.setdefault("registration_shared_secret", secrets.token_urlsafe(32))
        log.info("homeserver.config_reused", path=str(path), port=cfg.port)
    else:
        _run_synapse_generator(cfg, data_dir, path)
        config = dev_config(_load_yaml(path), cfg, data_dir)
        _write_log_config(data_dir / LOG_CONFIG_FILE)
        # The generator's own log config points at its working directory; ours replaces it.
        (data_dir / f"{cfg.server_name}.log.config").unlink(missing_ok=True)
        log.info("homeserver.config_generated", path=str(path), port=cfg.port)
    _write_private(path, yaml.safe_dump(config, sort_keys=False))
    return path


def dev_config(generated: dict[str, Any], cfg: HomeserverConfig, data_dir: Path) -> dict[str, Any]:
    """Return Synapse's generated config with the dev overrides applied (pure)."""
    config = dict(generated)
    # Federation is off three ways: no federation resource, no key servers to trust, and
    # an empty whitelist so Synapse refuses outbound federation too.
    config.update(
        {
            "server_name": cfg.server_name,
            "pid_file": str(data_dir / "homeserver.pid"),
            "listeners": [_listener(cfg)],
            "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
            "media_store_path": str(data_dir / "media_store"),
            "log_config": str(data_dir / LOG_CONFIG_FILE),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "enable_registration": False,
            "registration_shared_secret": generated.get("registration_shared_secret")
            or secrets.token_urlsafe(32),
            # Tests register many users; bcrypt at the default 12 rounds costs ~0.3 s each.
            "bcrypt_rounds": 4,
            "report_stats": False,
            "max_upload_size": "50M",
            **RATE_LIMITS,
            **cfg.overrides,
        }
    )
    return config


def _listener(cfg: HomeserverConfig) -> dict[str, Any]:
    return {
        "port": cfg.port,
        "type": "http",
        "tls": False,
        "x_forwarded": False,
        "bind_addresses": [cfg.host],
        "resources": [{"names": ["client"], "compress": False}],
    }


def _run_synapse_generator(cfg: HomeserverConfig, data_dir: Path, path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "synapse.app.homeserver",
        "--server-name",
        cfg.server_name,
        "--config-path",
        str(path),
        "--data-directory",
        str(data_dir),
        "--generate-config",
        "--report-stats=no",
    ]
    # cwd=data_dir: the generator writes some defaults relative to the working directory.
    result = subprocess.run(command, cwd=data_dir, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.exists():
        output = (result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:]
        raise HomeserverStartError(
            "Synapse could not generate its config (is the 'synapse' dependency group "
            "installed? run `uv sync`):\n" + "\n".join(output)
        )


def _write_log_config(path: Path) -> None:
    # Logs go to stderr, which the launcher redirects to synapse.log, so the file that
    # HomeserverStartError quotes holds both Synapse's log lines and any crash traceback.
    log_config = {
        "version": 1,
        "formatters": {
            "precise": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "precise",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "WARNING", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }
    path.write_text(yaml.safe_dump(log_config, sort_keys=False), encoding="utf-8")


def _load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise HomeserverStartError(f"{path} is not a YAML mapping; delete it to regenerate")
    return loaded


def _write_private(path: Path, text: str) -> None:
    # The file holds the registration secret: write it 0600 and swap it in atomically.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# --- process ------------------------------------------------------------------------------


class LocalHomeserver:
    """A Synapse child process on loopback with a dev configuration.

    ``start()`` returns once ``/health`` answers; ``stop()`` is idempotent. Use it as a
    context manager to guarantee the process is stopped. The process also gets stopped at
    interpreter exit, but not if this process is SIGKILLed.
    """

    def __init__(self, config: HomeserverConfig) -> None:
        self._config = config
        self._port: int | None = None
        self._secret: str | None = None
        # New session: a Ctrl-C in the terminal reaches only our process, which then
        # stops Synapse after whatever uses it (the bot) has shut down.
        self._child = ChildProcess(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            log_path=self.log_path,
            name="Synapse",
            cwd=self.data_dir,
            new_session=True,
        )

    @property
    def config(self) -> HomeserverConfig:
        """The configuration as given (``port`` may still be 0)."""
        return self._config

    @property
    def data_dir(self) -> Path:
        return self._config.data_dir.resolve()

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / SYNAPSE_LOG_FILE

    @property
    def port(self) -> int:
        """The port Synapse listens on. Raises RuntimeError before the first ``start()``."""
        if self._port is None:
            raise RuntimeError("LocalHomeserver.port is only known after start()")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the client API. Raises RuntimeError before ``start()``."""
        host = self._config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def server_name(self) -> str:
        return self._config.server_name

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def is_running(self) -> bool:
        return self._child.is_running()

    def start(self, timeout: float = 60.0) -> None:
        """Generate or update the config, spawn Synapse and wait until it is healthy.

        Raises HomeserverStartError (with the tail of synapse.log) if the port is taken,
        Synapse exits, or it is not healthy within ``timeout`` seconds; the process is
        stopped before raising. Calling ``start()`` on a running server is an error.
        """
        if self.is_running():
            raise RuntimeError("LocalHomeserver is already running")
        started_at = time.monotonic()
        port = self._config.port or find_free_port(self._config.host)
        if not port_is_free(self._config.host, port):
            raise HomeserverStartError(
                f"port {port} on {self._config.host} is already in use; "
                "stop the other server or choose another port (0 picks a free one)"
            )
        config_path = generate_config(replace(self._config, port=port))
        self._secret = str(_load_yaml(config_path)["registration_shared_secret"])
        self._port = port

        self._child.start()
        atexit.register(self.stop)
        log.info("homeserver.spawned", pid=self._child.pid, port=port)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "homeserver.started",
            url=self.base_url,
            pid=self._child.pid,
            elapsed_s=round(time.monotonic() - started_at, 3),
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Poll ``GET /health`` until it answers 200.

        Raises HomeserverStartError if the process exits or the deadline passes first.
        """
        if self._child.proc is None:
            raise RuntimeError("LocalHomeserver.wait_healthy() called before start()")
        try:
            self._child.wait_http(self.base_url + "/health", timeout=timeout, poll_s=0.05)
        except ChildExited as exc:
            raise HomeserverStartError(
                f"Synapse exited with code {exc.returncode} during start-up; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            ) from None
        except TimeoutError:
            raise HomeserverStartError(
                f"Synapse was not healthy after {timeout:.0f} s; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            ) from None

    def stop(self) -> None:
        """SIGTERM Synapse, wait up to 10 s, then SIGKILL. Idempotent."""
        atexit.unregister(self.stop)
        if not self._child.is_running():
            return
        try:
            self._child.stop(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("homeserver.kill", pid=self._child.pid, grace_s=_STOP_GRACE_S)
        log.info("homeserver.stopped", pid=self._child.pid, returncode=self._child.returncode)

    def kill(self) -> None:
        """SIGKILL Synapse at once and reap it. Idempotent."""
        self._child.kill()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of synapse.log (empty if there is none yet)."""
        return self._child.log_tail(lines)

    def register_user(self, localpart: str, password: str, admin: bool = False) -> RegisteredUser:
        """Register ``localpart`` through the shared-secret admin API and return a login.

        Idempotent: if the user exists, log in with ``password`` instead (a new device and
        token; the admin flag of an existing user is left unchanged).
        Raises RegistrationError (PasswordRefused for an existing user with another
        password) if Synapse refuses both.
        """
        if self._secret is None:
            raise RuntimeError("LocalHomeserver.register_user() called before start()")
        started_at = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=_HTTP_TIMEOUT_S, trust_env=False) as c:
            user, created = register_or_login(c, self._secret, localpart, password, admin=admin)
        log.info(
            "homeserver.user_ready",
            user_id=user.user_id,
            created=created,
            admin=admin,
            elapsed_s=round(time.monotonic() - started_at, 3),
        )
        return user

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- CLI entry ----------------------------------------------------------------------------


def main_dev_homeserver(data_dir: Path, port: int, users: list[tuple[str, str]]) -> int:
    """Run a dev Synapse in the foreground until SIGINT/SIGTERM; return an exit code.

    Registers ``users`` as (localpart, password) pairs (idempotent). The first signal
    stops Synapse gracefully (SIGTERM, then SIGKILL after 10 s); a second one kills it at
    once; a signal during start-up aborts it. Returns 0 when stopped by a signal, 1 if
    Synapse fails to start or dies on its own.
    """
    server = LocalHomeserver(HomeserverConfig(data_dir=data_dir, port=port))
    stop_requested = threading.Event()
    serving = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not serving:
            # Abort a start-up in progress; start() stops the child before re-raising.
            raise KeyboardInterrupt
        if stop_requested.is_set():
            server.kill()
        stop_requested.set()

    previous = _install_signal_handlers(on_signal)
    try:
        try:
            server.start()
            registered = [server.register_user(name, password) for name, password in users]
        except DevHomeserverError as exc:
            print(f"dev homeserver failed: {exc}", file=sys.stderr)
            return 1
        print(f"Synapse is running at {server.base_url} (data in {server.data_dir})")
        for user in registered:
            print(f"  user {user.user_id} (password as given)")
        print("Press Ctrl-C to stop.", flush=True)
        serving = True
        while not stop_requested.wait(0.5):
            if not server.is_running():
                print(f"Synapse exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        _restore_signal_handlers(previous)


# What signal.signal accepts and returns: a function, SIG_DFL/SIG_IGN, or None.
_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _install_signal_handlers(
    handler: Callable[[int, FrameType | None], Any],
) -> dict[signal.Signals, _SignalHandler]:
    # Signal handlers can only be set from the main thread; elsewhere we rely on the
    # caller to stop us (KeyboardInterrupt still works).
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[signal.Signals, _SignalHandler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
