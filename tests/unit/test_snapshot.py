"""The reconciliation snapshot sent before the imports (runtime/matrix/snapshot.py), and its use.

The homeserver is a real HTTP server on loopback that records what it was asked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fakes import FakeMatrix
from structlog.testing import capture_logs

from contracts.matrix import SyncBatch
from runtime.matrix.parse import LoadedSync
from runtime.matrix.session import SESSION_FILE, StoredSession, write_session
from runtime.matrix.snapshot import STATE_AFTER_FILE, SnapshotPrefetch
from runtime.matrix.sync_query import SNAPSHOT_TIMEOUT_S, USE_STATE_AFTER, sync_query
from runtime.settings import Settings, load_settings
from runtime.store import SqliteStore, read_checkpoint
from tasks.reconcile import CATCH_UP_WINDOW, STATE_WINDOW, reconcile, snapshot_window

BOT = "@bot:example.org"
TOKEN = "syt_secret_token"
ANSWER = {"next_batch": "s42", "rooms": {"join": {}}, "account_data": {"events": []}}


def body_of(taken: LoadedSync | None) -> dict[str, Any] | None:
    """What a prefetch handed over, as JSON (ANSWER has no joined rooms to convert)."""
    return None if taken is None else taken.body


pytestmark = pytest.mark.usefixtures("clean_environment")


@dataclass
class FakeHomeserver:
    """Answers every request with `status` and `body`; records path, query and token."""

    status: int = 200
    body: Any = field(default_factory=lambda: ANSWER)
    requests: list[tuple[str, dict[str, list[str]], str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def homeserver() -> Iterator[FakeHomeserver]:
    fake = FakeHomeserver()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests.append((parts.path, parse_qs(parts.query), self.headers["Authorization"]))
            payload = json.dumps(fake.body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def settings_for(homeserver: FakeHomeserver, tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(
        matrix_homeserver=homeserver.url,
        matrix_user_id=BOT,
        matrix_password="pw",
        matrix_db_path=tmp_path / "bot.db",
        matrix_store_path=tmp_path / "store",
        **overrides,
    )


def store_session(settings: Settings, *, user_id: str = BOT, homeserver: str | None = None) -> None:
    write_session(
        settings.matrix_store_path / SESSION_FILE,
        StoredSession(
            user_id=user_id,
            device_id="DEVICE",
            access_token=TOKEN,
            homeserver=homeserver or str(settings.matrix_homeserver),
        ),
    )


def intact_bot(homeserver: FakeHomeserver, tmp_path: Path) -> Settings:
    """Settings of a bot with its stored session and a database with its checkpoint."""
    settings = settings_for(homeserver, tmp_path)
    store_session(settings)
    with SqliteStore(settings.matrix_db_path) as store:
        store.record_batch([], "s1")
    return settings


def started(settings: Settings) -> SnapshotPrefetch:
    prefetch = SnapshotPrefetch.start(settings)
    assert prefetch is not None
    return prefetch


# -- what is asked ---------------------------------------------------------------------------


def test_a_fresh_store_asks_the_catch_up_window_with_the_stored_token(
    homeserver: FakeHomeserver, tmp_path: Path
) -> None:
    settings = settings_for(homeserver, tmp_path)
    store_session(settings)

    taken = started(settings).take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW)

    assert taken is not None and taken.body == ANSWER
    [(path, query, auth)] = homeserver.requests
    assert path == "/_matrix/client/v3/sync"
    assert auth == f"Bearer {TOKEN}"
    assert query["full_state"] == ["true"]
    assert json.loads(query["filter"][0])["room"]["timeline"]["limit"] == CATCH_UP_WINDOW
    assert "since" not in query


def test_a_store_with_a_checkpoint_asks_the_state_window(
    homeserver: FakeHomeserver, tmp_path: Path
) -> None:
    settings = intact_bot(homeserver, tmp_path)

    prefetch = started(settings)

    assert prefetch.timeline_limit == STATE_WINDOW
    assert body_of(prefetch.take(user_id=BOT, timeline_limit=STATE_WINDOW)) == ANSWER


def test_a_configured_access_token_is_used(homeserver: FakeHomeserver, tmp_path: Path) -> None:
    settings = settings_for(homeserver, tmp_path, matrix_access_token="syt_configured")

    started(settings).take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW)

    assert homeserver.requests[0][2] == "Bearer syt_configured"


@pytest.mark.parametrize(
    "session",
    [
        pytest.param(None, id="no-session"),
        pytest.param({"user_id": "@other:example.org"}, id="another-user"),
        pytest.param({"homeserver": "http://elsewhere.example"}, id="another-homeserver"),
    ],
)
def test_without_a_usable_token_nothing_is_sent(
    homeserver: FakeHomeserver, tmp_path: Path, session: dict[str, str] | None
) -> None:
    settings = settings_for(homeserver, tmp_path)
    if session is not None:
        store_session(settings, **session)

    assert SnapshotPrefetch.start(settings) is None
    assert homeserver.requests == []


# -- what is handed over ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(401, {"errcode": "M_UNKNOWN_TOKEN"}, id="rejected-token"),
        pytest.param(502, {"error": "bad gateway"}, id="server-error"),
        pytest.param(200, ["not", "a", "sync"], id="not-a-sync-answer"),
    ],
)
def test_a_failed_snapshot_hands_over_nothing_and_logs_no_token(
    homeserver: FakeHomeserver, tmp_path: Path, status: int, body: Any
) -> None:
    homeserver.status, homeserver.body = status, body
    settings = settings_for(homeserver, tmp_path)
    store_session(settings)

    with capture_logs() as logs:
        taken = started(settings).take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW)

    assert taken is None
    assert [entry["event"] for entry in logs] == ["snapshot.prefetch_failed"]
    assert TOKEN not in repr(logs)


def test_an_unreachable_homeserver_hands_over_nothing(tmp_path: Path) -> None:
    unreachable = FakeHomeserver(url="http://127.0.0.1:9")  # discard port: refused
    settings = settings_for(unreachable, tmp_path)
    store_session(settings)

    assert started(settings).take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW) is None


@pytest.mark.parametrize(
    ("user_id", "window"),
    [
        pytest.param("@other:example.org", CATCH_UP_WINDOW, id="another-user"),
        pytest.param(BOT, STATE_WINDOW, id="another-window"),
    ],
)
def test_an_answer_to_another_question_is_not_handed_over(
    homeserver: FakeHomeserver, tmp_path: Path, user_id: str, window: int
) -> None:
    settings = settings_for(homeserver, tmp_path)
    store_session(settings)

    assert started(settings).take(user_id=user_id, timeline_limit=window) is None


def test_the_answer_is_handed_over_once(homeserver: FakeHomeserver, tmp_path: Path) -> None:
    settings = settings_for(homeserver, tmp_path)
    store_session(settings)
    prefetch = started(settings)

    first = prefetch.take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW)
    second = prefetch.take(user_id=BOT, timeline_limit=CATCH_UP_WINDOW)

    assert (body_of(first), second) == (ANSWER, None)


# -- the checkpoint peek and reconcile ---------------------------------------------------------


def test_read_checkpoint_reads_without_creating_or_changing_anything(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    written = tmp_path / "bot.db"
    with SqliteStore(written) as store:
        store.record_batch([], "s7")

    assert (read_checkpoint(missing), read_checkpoint(garbage)) == (None, None)
    assert not missing.exists()
    assert garbage.read_bytes() == b"not a database at all" * 100
    assert read_checkpoint(written) == "s7"


async def test_reconcile_uses_a_given_snapshot_instead_of_asking(tmp_path: Path) -> None:
    matrix = FakeMatrix(user_id=BOT)
    snapshot = SyncBatch(next_batch="s9", joined={}, invited={})
    with SqliteStore(tmp_path / "bot.db") as store:
        _report, batch = await reconcile(store, matrix, snapshot=snapshot)

    assert batch is snapshot
    assert matrix.sync_calls == []


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "intact"])
async def test_reconcile_without_a_snapshot_asks_the_window_for_its_store(
    tmp_path: Path, fresh: bool
) -> None:
    matrix = FakeMatrix(user_id=BOT)
    with SqliteStore(tmp_path / "bot.db") as store:
        if not fresh:
            store.record_batch([], "s1")
        await reconcile(store, matrix)

    [call] = matrix.sync_calls
    assert (call.since, call.full_state) == (None, True)
    assert call.timeline_limit == snapshot_window(fresh=fresh)


def test_the_snapshot_module_loads_no_http_client_or_nio() -> None:
    # `surface run` sends the snapshot before the heavy imports: importing it must stay light.
    code = (
        "import sys, runtime.matrix.snapshot\n"
        "print(sorted({'nio', 'aiohttp', 'httpx', 'trio_asyncio'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert loaded.strip() == "[]"


# -- MSC4222 state_after -----------------------------------------------------------------------


def test_snapshot_syncs_ask_for_state_after_and_incremental_ones_do_not() -> None:
    full = sync_query(None, timeout_ms=0, full_state=True, timeline_limit=0, seq=1)
    incremental = sync_query("s1", timeout_ms=30_000, full_state=False, timeline_limit=10, seq=1)

    assert full[USE_STATE_AFTER] == "true"
    assert USE_STATE_AFTER not in incremental


@pytest.mark.parametrize(
    ("fresh", "state_after", "window"),
    [
        (True, False, CATCH_UP_WINDOW),
        (True, True, CATCH_UP_WINDOW),
        (False, False, STATE_WINDOW),
        (False, True, 0),
    ],
)
def test_the_window_is_0_only_with_the_checkpoint_and_a_server_answering_state_after(
    fresh: bool, state_after: bool, window: int
) -> None:
    assert snapshot_window(fresh=fresh, state_after=state_after) == window


def test_a_remembered_state_after_asks_window_0_on_an_intact_store(
    homeserver: FakeHomeserver, tmp_path: Path
) -> None:
    settings = intact_bot(homeserver, tmp_path)
    first = started(settings)
    first.take(user_id=BOT, timeline_limit=STATE_WINDOW)

    first.remember_state_after(True)
    second = started(settings)

    assert (first.timeline_limit, second.timeline_limit) == (STATE_WINDOW, 0)
    assert body_of(second.take(user_id=BOT, timeline_limit=0)) == ANSWER
    [*_, (_, query, _)] = homeserver.requests
    assert query[USE_STATE_AFTER] == ["true"]
    assert json.loads(query["filter"][0])["room"]["timeline"]["limit"] == 0


def test_state_after_is_remembered_per_server_and_account_and_can_be_turned_off(
    homeserver: FakeHomeserver, tmp_path: Path
) -> None:
    settings = intact_bot(homeserver, tmp_path)
    started(settings).remember_state_after(True)
    path = settings.matrix_store_path / STATE_AFTER_FILE
    remembered = json.loads(path.read_text())
    path.write_text(json.dumps({**remembered, "homeserver": "https://elsewhere.example"}))

    assert started(settings).state_after is False  # another server: not known

    path.write_text(json.dumps(remembered))
    prefetch = started(settings)
    assert prefetch.state_after is True
    prefetch.remember_state_after(False)
    assert started(settings).timeline_limit == STATE_WINDOW


def test_snapshot_syncs_leave_out_the_state_nobody_reads_and_incremental_ones_do_not() -> None:
    full = sync_query(None, timeout_ms=0, full_state=True, timeline_limit=30, seq=1)
    incremental = sync_query("s1", timeout_ms=30_000, full_state=False, timeline_limit=10, seq=1)

    snapshot_room = json.loads(full["filter"])["room"]
    incremental_room = json.loads(incremental["filter"])["room"]
    for section in ("state", "timeline"):
        assert "m.room.power_levels" in snapshot_room[section]["not_types"]
        assert "m.room.member" not in snapshot_room[section]["not_types"]
        assert "not_types" not in incremental_room[section]
    assert snapshot_room["state"]["lazy_load_members"] is False
    fields = json.loads(full["filter"])["event_fields"]
    assert {"content", "event_id", "sender", "type", "state_key"} <= set(fields)
    assert "unsigned.prev_content" in fields and "unsigned.m\\.relations" in fields
    assert "event_fields" not in json.loads(incremental["filter"])


def test_a_full_state_sync_may_take_minutes_in_the_prefetch_and_in_the_adapter() -> None:
    """10,000 rooms took Synapse 119 s on the benchmark machine: the old 120 s bound
    failed every wiped-database start there (benchmarks/README.md)."""
    import inspect

    from runtime.matrix.nio_adapter import NioMatrix

    adapter_bound = inspect.signature(NioMatrix.connect).parameters["initial_sync_timeout"]
    prefetch_bound = inspect.signature(SnapshotPrefetch.__init__).parameters["timeout"]
    assert adapter_bound.default == prefetch_bound.default == SNAPSHOT_TIMEOUT_S
    assert SNAPSHOT_TIMEOUT_S >= 5 * 119
