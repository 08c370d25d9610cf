"""A local Synapse homeserver for development, the embedded `surface run` default and e2e tests.

Synapse runs as a child process of the same Python interpreter (it is installed in the
project's venv through the ``synapse`` dependency group), on SQLite, listening on loopback
only, with federation off and every rate limit raised so tests are never throttled.

The API is synchronous on purpose: pytest fixtures and the CLI both drive it from plain
threads, and a child process needs no event loop. ``register_user`` is a short blocking
HTTP call; async callers should run it with ``anyio.to_thread.run_sync``.

Exceptions::

    DevHomeserverError
    ├── HomeserverStartError   Synapse could not be configured, spawned or made healthy
    └── RegistrationError      the admin register API or the password login refused us

Retried vs fatal: ``wait_healthy`` retries connection errors and non-200 answers until its
deadline (Synapse is still binding its port); everything else is fatal and raised at once,
because a local homeserver that misbehaves is a setup problem a retry will not fix.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self

import httpx
import structlog
import yaml

__all__ = [
    "RATE_LIMITS",
    "DevHomeserverError",
    "HomeserverConfig",
    "HomeserverStartError",
    "LocalHomeserver",
    "RegisteredUser",
    "RegistrationError",
    "dev_config",
    "find_free_port",
    "generate_config",
    "main_dev_homeserver",
    "registration_mac",
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


class DevHomeserverError(Exception):
    """Base class for errors of the local homeserver launcher."""


class HomeserverStartError(DevHomeserverError):
    """Synapse could not be configured, spawned, or did not become healthy in time."""


class RegistrationError(DevHomeserverError):
    """A user could not be registered nor logged in."""


@dataclass(frozen=True)
class HomeserverConfig:
    """Where and how the local Synapse runs. ``port=0`` picks a free port at start."""

    data_dir: Path
    port: int = 8008
    host: str = "127.0.0.1"
    server_name: str = "localhost"


@dataclass(frozen=True)
class RegisteredUser:
    """A user on the local homeserver with a fresh access token and its device."""

    user_id: str
    password: str = field(repr=False)
    access_token: str = field(repr=False)
    device_id: str


# --- configuration ------------------------------------------------------------------------


def find_free_port(host: str) -> int:
    """Ask the kernel for a currently free TCP port on ``host``.

    Another process may take it before Synapse binds it; ``LocalHomeserver.start`` then
    fails with a clear error rather than talking to the wrong server.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def generate_config(cfg: HomeserverConfig) -> Path:
    """Write ``data_dir/homeserver.yaml`` for a loopback-only, federation-less dev Synapse.

    A new file gets the full dev configuration (see module docstring). An existing file is
    kept as the user may have edited it: only the listener is re-applied so a reused data
    dir can run on a new host/port, and a missing ``registration_shared_secret`` is added;
    an existing secret is never rotated. ``port=0`` picks a free port.

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


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 that Synapse's shared-secret register API expects (pure)."""
    message = "\x00".join((nonce, username, password, "admin" if admin else "notadmin"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha1).hexdigest()


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
        self._process: subprocess.Popen[bytes] | None = None
        self._secret: str | None = None

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
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

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
        if not _port_is_free(self._config.host, port):
            raise HomeserverStartError(
                f"port {port} on {self._config.host} is already in use; "
                "stop the other server or choose another port (0 picks a free one)"
            )
        config_path = generate_config(replace(self._config, port=port))
        self._secret = str(_load_yaml(config_path)["registration_shared_secret"])
        self._port = port

        with self.log_path.open("ab") as log_file:
            # New session: a Ctrl-C in the terminal reaches only our process, which then
            # stops Synapse after whatever uses it (the bot) has shut down.
            self._process = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        log.info("homeserver.spawned", pid=self._process.pid, port=port)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "homeserver.started",
            url=self.base_url,
            pid=self._process.pid,
            elapsed_s=round(time.monotonic() - started_at, 3),
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Poll ``GET /health`` until it answers 200.

        Raises HomeserverStartError if the process exits or the deadline passes first.
        """
        process = self._process
        if process is None:
            raise RuntimeError("LocalHomeserver.wait_healthy() called before start()")
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    raise HomeserverStartError(
                        f"Synapse exited with code {process.returncode} during start-up; "
                        f"last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    raise HomeserverStartError(
                        f"Synapse was not healthy after {timeout:.0f} s; "
                        f"last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM Synapse, wait up to 10 s, then SIGKILL. Idempotent."""
        atexit.unregister(self.stop)
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("homeserver.kill", pid=process.pid, grace_s=_STOP_GRACE_S)
            self.kill()
        log.info("homeserver.stopped", pid=process.pid, returncode=process.returncode)

    def kill(self) -> None:
        """SIGKILL Synapse at once and reap it. Idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of synapse.log (empty if there is none yet)."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except FileNotFoundError:
            return ""

    def register_user(self, localpart: str, password: str, admin: bool = False) -> RegisteredUser:
        """Register ``localpart`` through the shared-secret admin API and return a login.

        Idempotent: if the user exists, log in with ``password`` instead (a new device and
        token; the admin flag of an existing user is left unchanged).
        Raises RegistrationError if Synapse refuses both.
        """
        if self._secret is None:
            raise RuntimeError("LocalHomeserver.register_user() called before start()")
        started_at = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=_HTTP_TIMEOUT_S, trust_env=False) as c:
            nonce_response = c.get("/_synapse/admin/v1/register")
            _raise_for_status(nonce_response, "get a registration nonce", localpart)
            nonce = str(nonce_response.json()["nonce"])
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": registration_mac(self._secret, nonce, localpart, password, admin),
            }
            response = c.post("/_synapse/admin/v1/register", json=body)
            created = True
            if response.status_code == 400 and _errcode(response) == "M_USER_IN_USE":
                created = False
                response = c.post(
                    "/_matrix/client/v3/login",
                    json={
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": localpart},
                        "password": password,
                    },
                )
                _raise_for_status(response, "log in as the existing user", localpart)
            else:
                _raise_for_status(response, "register", localpart)
        payload = response.json()
        user = RegisteredUser(
            user_id=str(payload["user_id"]),
            password=password,
            access_token=str(payload["access_token"]),
            device_id=str(payload["device_id"]),
        )
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


def _errcode(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("errcode")) if isinstance(body, dict) else None


def _raise_for_status(response: httpx.Response, action: str, localpart: str) -> None:
    if response.status_code == 200:
        return
    # Synapse error bodies carry errcode/error only, never the password or a token.
    raise RegistrationError(
        f"could not {action} {localpart!r}: HTTP {response.status_code} {response.text[:500]}"
    )


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
