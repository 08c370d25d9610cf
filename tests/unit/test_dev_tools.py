"""runtime/dev: the child-process helper on real processes; register-or-login on a fake Synapse.

The fake Synapse is an ``httpx.MockTransport`` that keeps its users and records every
request, so the register job's "leave no session behind" is checked by what it sent.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from runtime.dev.accounts import register_or_login, registration_mac
from runtime.dev.errors import PasswordRefused, RegistrationError
from runtime.dev.process import ChildExited, ChildProcess, find_free_port, port_is_free

ROOT = Path(__file__).resolve().parents[2]
SECRET = "shared-secret"


# -- ChildProcess ------------------------------------------------------------------------------


def _python(tmp_path: Path, code: str, name: str = "child") -> ChildProcess:
    return ChildProcess(
        [sys.executable, "-c", code], log_path=tmp_path / f"{name}.log", name=name, cwd=tmp_path
    )


def _http_server(tmp_path: Path) -> tuple[ChildProcess, str]:
    """`python -m http.server` serving tmp_path, where the file `health` makes /health 200."""
    (tmp_path / "health").write_text("OK")
    port = find_free_port()
    child = ChildProcess(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log_path=tmp_path / "server.log",
        name="server",
        cwd=tmp_path,
    )
    return child, f"http://127.0.0.1:{port}/health"


def _wait_for_log(child: ChildProcess, needle: str) -> None:
    deadline = time.monotonic() + 20
    while needle not in child.log_text():
        child.check_alive()
        assert time.monotonic() < deadline, f"{needle!r} not in {child.log_text()!r}"
        time.sleep(0.01)


def test_wait_http_returns_once_the_child_answers_and_stop_terminates_it(tmp_path: Path) -> None:
    child, url = _http_server(tmp_path)
    child.start()
    try:
        child.wait_http(url, timeout=20)

        assert child.is_running()
        assert child.stop(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()

    assert not child.is_running()
    assert child.stop() == -signal.SIGTERM  # idempotent


async def test_wait_http_async_returns_the_time_of_the_first_answer(tmp_path: Path) -> None:
    child, url = _http_server(tmp_path)
    child.start()
    try:
        before = time.monotonic()

        answered_at = await child.wait_http_async(url, within=20)

        assert before <= answered_at <= time.monotonic()
    finally:
        child.kill()


def test_a_child_that_exits_while_waited_for_raises_with_its_log_tail(tmp_path: Path) -> None:
    child = _python(tmp_path, "import sys; print('boom: bad config'); sys.exit(3)")
    child.start()

    with pytest.raises(ChildExited, match=r"child exited \(3\):\nboom: bad config") as caught:
        child.wait_http(f"http://127.0.0.1:{find_free_port()}/", timeout=20)

    assert caught.value.returncode == 3


def test_the_exited_error_class_is_the_subclass_s(tmp_path: Path) -> None:
    class ServiceDied(ChildExited):
        pass

    class Service(ChildProcess):
        exited_error = ServiceDied

    child = Service([sys.executable, "-c", "pass"], log_path=tmp_path / "s.log", name="service")
    child.start()
    assert child.proc is not None
    child.proc.wait()

    with pytest.raises(ServiceDied, match=r"service exited \(0\)"):
        child.check_alive()


def test_wait_http_times_out_with_the_log_tail(tmp_path: Path) -> None:
    child = _python(tmp_path, "import time; print('still starting', flush=True); time.sleep(60)")
    child.start()
    try:
        _wait_for_log(child, "still starting")

        with pytest.raises(TimeoutError, match=r"child not ready after 0.2s:\nstill starting"):
            child.wait_http(f"http://127.0.0.1:{find_free_port()}/", timeout=0.2, poll_s=0.01)
    finally:
        child.kill()


def test_stop_kills_a_child_that_ignores_sigterm_and_says_so(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = _python(tmp_path, code)
    child.start()
    _wait_for_log(child, "ignoring")

    with pytest.raises(subprocess.TimeoutExpired):
        child.stop(timeout=0.2)

    assert child.returncode == -signal.SIGKILL


def test_start_twice_is_refused_and_a_restart_appends_to_the_log(tmp_path: Path) -> None:
    child = _python(tmp_path, "import time; print('run', flush=True); time.sleep(60)")
    child.start()
    with pytest.raises(RuntimeError, match="already running"):
        child.start()
    _wait_for_log(child, "run\n")
    assert child.stop(timeout=10) == -signal.SIGTERM

    child.start()
    try:
        _wait_for_log(child, "run\nrun\n")
    finally:
        child.kill()

    assert child.log_tail(1) == "run"


def test_log_tail_before_the_first_start_is_empty(tmp_path: Path) -> None:
    child = _python(tmp_path, "pass")

    assert child.log_tail() == ""
    assert child.log_text() == ""
    assert child.returncode is None
    assert child.stop() is None


def test_a_free_port_is_free_until_bound() -> None:
    import socket

    port = find_free_port("127.0.0.1")
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)


# -- register-or-login on a fake Synapse -----------------------------------------------------


@dataclass
class FakeSynapse:
    """The admin register, login and logout endpoints, with users in a dict."""

    passwords: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    register_status: int = 200
    devices: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        path = request.url.path
        if path == "/_synapse/admin/v1/register" and request.method == "GET":
            return httpx.Response(200, json={"nonce": f"nonce-{len(self.requests)}"})
        if path == "/_synapse/admin/v1/register":
            body = json.loads(request.content)
            mac = registration_mac(
                SECRET, body["nonce"], body["username"], body["password"], body["admin"]
            )
            if body["mac"] != mac:
                return httpx.Response(403, json={"errcode": "M_FORBIDDEN", "error": "HMAC"})
            if self.register_status != 200:
                return httpx.Response(self.register_status, json={"errcode": "M_UNKNOWN"})
            if body["username"] in self.passwords:
                return httpx.Response(400, json={"errcode": "M_USER_IN_USE"})
            self.passwords[body["username"]] = body["password"]
            return self._session(body["username"])
        if path == "/_matrix/client/v3/login":
            body = json.loads(request.content)
            localpart = body["identifier"]["user"]
            if self.passwords.get(localpart) != body["password"]:
                return httpx.Response(403, json={"errcode": "M_FORBIDDEN"})
            return self._session(localpart)
        if path == "/_matrix/client/v3/logout":
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"errcode": "M_UNRECOGNIZED"})

    def _session(self, localpart: str) -> httpx.Response:
        self.devices += 1
        return httpx.Response(
            200,
            json={
                "user_id": f"@{localpart}:localhost",
                "access_token": f"token-{self.devices}",
                "device_id": f"DEVICE{self.devices}",
            },
        )

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://synapse", transport=httpx.MockTransport(self.handle))


def test_a_new_user_is_registered() -> None:
    synapse = FakeSynapse()
    with synapse.client() as client:
        user, created = register_or_login(client, SECRET, "alice", "pw")

    assert created
    assert (user.user_id, user.device_id, user.access_token) == (
        "@alice:localhost",
        "DEVICE1",
        "token-1",
    )
    assert synapse.passwords == {"alice": "pw"}


def test_an_existing_user_is_logged_in_with_a_new_device() -> None:
    synapse = FakeSynapse(passwords={"alice": "pw"})
    with synapse.client() as client:
        user, created = register_or_login(client, SECRET, "alice", "pw")

    assert not created
    assert user.device_id == "DEVICE1"
    assert synapse.requests[-1] == ("POST", "/_matrix/client/v3/login")


def test_an_existing_user_with_another_password_is_refused() -> None:
    synapse = FakeSynapse(passwords={"alice": "pw"})
    with synapse.client() as client, pytest.raises(PasswordRefused, match="'alice' exists"):
        register_or_login(client, SECRET, "alice", "other")


def test_a_refused_registration_is_not_a_password_problem() -> None:
    synapse = FakeSynapse(register_status=500)
    with synapse.client() as client, pytest.raises(RegistrationError) as caught:
        register_or_login(client, SECRET, "alice", "pw")

    assert not isinstance(caught.value, PasswordRefused)
    assert "could not register 'alice': HTTP 500" in str(caught.value)


# -- deploy/synapse/register.py (the fullstack stack's register job) ---------------------------


def _register_job() -> ModuleType:
    path = ROOT / "deploy" / "synapse" / "register.py"
    spec = importlib.util.spec_from_file_location("fullstack_register_job", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_register_job_logs_an_existing_user_s_new_device_out_again() -> None:
    job = _register_job()
    synapse = FakeSynapse(passwords={"bot": "pw"})

    with synapse.client() as client:
        outcomes = [
            job.register(client, SECRET, "bot", "pw"),
            job.register(client, SECRET, "new", "x"),
        ]

    assert outcomes == ["exists", "registered"]
    assert synapse.requests.count(("POST", "/_matrix/client/v3/logout")) == 1


def test_register_job_names_the_fix_for_a_refused_password() -> None:
    job = _register_job()
    synapse = FakeSynapse(passwords={"bot": "pw"})

    with synapse.client() as client, pytest.raises(RegistrationError, match="synapse-data volume"):
        job.register(client, SECRET, "bot", "wrong")
