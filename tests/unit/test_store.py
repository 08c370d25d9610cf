"""The durable store: the Store contract (every implementation) and SQLite specifics.

Contract tests take the parametrised `harness` / `store` fixtures, so a second
Store implementation runs them all by adding one entry to `_BACKENDS`.
"""

from __future__ import annotations

import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord
from contracts.store import (
    LedgerEntry,
    LedgerStatus,
    Store,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreTooNew,
)
from runtime.store import SqliteStore
from runtime.store_schema import SCHEMA_VERSION

ALICE = "@alice:example.org"
BOB = "@bob:example.org"


# -- fixtures --------------------------------------------------------------------------------


@dataclass
class StoreHarness:
    """Opens handles on one backing store; every handle sees the same durable state."""

    open_handle: Callable[[], Store]
    close_handle: Callable[[Store], None]
    _open: list[Store] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> Store:
        handle = self.open_handle()
        with self._lock:
            self._open.append(handle)
        return handle

    def close(self, handle: Store) -> None:
        with self._lock:
            self._open.remove(handle)
        self.close_handle(handle)

    def close_all(self) -> None:
        while self._open:
            self.close(self._open[-1])


def _sqlite_harness(tmp_path: Path) -> StoreHarness:
    def close(handle: Store) -> None:
        assert isinstance(handle, SqliteStore)
        handle.close()

    return StoreHarness(lambda: SqliteStore(tmp_path / "state.db"), close)


_BACKENDS: dict[str, Callable[[Path], StoreHarness]] = {"sqlite": _sqlite_harness}


@pytest.fixture(params=sorted(_BACKENDS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHarness]:
    opened = _BACKENDS[request.param](tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def store(harness: StoreHarness) -> Store:
    return harness.open()


def _chat_room(
    room_id: str,
    chat_id: str,
    *,
    owner: str = ALICE,
    display_name: str | None = None,
    archived: bool = False,
) -> RoomRecord:
    return RoomRecord(
        room_id=room_id,
        room_type=RoomType.CHAT,
        matrix_user_id=owner,
        space_id="!space:example.org",
        chat_id=chat_id,
        display_name=display_name,
        agent_id="echo",
        platform_chat_id="7",
        archived=archived,
    )


def _entry(event_id: str, body: str = "hi", **overrides: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "event_id": event_id,
        "room_id": "!room:example.org",
        "sender": ALICE,
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": body},
        "origin_server_ts": 1_700_000_000_000,
        **overrides,
    }
    return LedgerEntry.model_validate(fields)


# -- the platform-chat sequence --------------------------------------------------------------


def test_concurrent_allocations_from_separate_handles_are_unique(harness: StoreHarness) -> None:
    setup = harness.open()
    setup.set_reserved_through(1000)
    workers = 50
    start_together = threading.Barrier(workers, timeout=60)

    def allocate_once() -> int:
        handle = harness.open()
        try:
            start_together.wait()
            while True:  # a write refused as busy wrote nothing: the caller tries again
                try:
                    return handle.allocate_platform_chat_id()
                except StoreBusy:
                    time.sleep(0.001)
        finally:
            harness.close(handle)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(allocate_once) for _ in range(workers)]
        ids = [future.result() for future in futures]

    assert sorted(ids) == list(range(1, workers + 1))
    assert setup.sequence_state().next_value == workers + 1


def test_sequence_continues_after_reopen_and_never_reissues(harness: StoreHarness) -> None:
    first = harness.open()
    first.set_reserved_through(100)
    issued = [first.allocate_platform_chat_id() for _ in range(3)]
    harness.close(first)

    reopened = harness.open()
    after_reopen = reopened.allocate_platform_chat_id()

    assert issued == [1, 2, 3]
    assert after_reopen == 4
    assert reopened.sequence_state().reserved_through == 100


def test_allocation_past_reserved_through_raises_and_consumes_nothing(store: Store) -> None:
    store.set_reserved_through(2)
    assert [store.allocate_platform_chat_id(), store.allocate_platform_chat_id()] == [1, 2]

    with pytest.raises(StoreError, match="reserved"):
        store.allocate_platform_chat_id()

    assert store.sequence_state().next_value == 3
    store.set_reserved_through(3)
    assert store.allocate_platform_chat_id() == 3


def test_fresh_store_has_nothing_reserved(store: Store) -> None:
    with pytest.raises(StoreError):
        store.allocate_platform_chat_id()


def test_raise_sequence_floor_never_lowers(store: Store) -> None:
    store.set_reserved_through(100)
    for _ in range(5):
        store.allocate_platform_chat_id()

    store.raise_sequence_floor(3)

    assert store.sequence_state().next_value == 6
    assert store.allocate_platform_chat_id() == 6


def test_raise_sequence_floor_skips_ahead(store: Store) -> None:
    store.set_reserved_through(100)

    store.raise_sequence_floor(40)

    assert store.allocate_platform_chat_id() == 40


def test_set_reserved_through_never_lowers(store: Store) -> None:
    store.set_reserved_through(50)

    store.set_reserved_through(10)

    assert store.sequence_state().reserved_through == 50


# -- ledger and checkpoint ---------------------------------------------------------------------


def test_record_batch_returns_new_entries_and_sets_checkpoint(store: Store) -> None:
    entries = [_entry("$b"), _entry("$a", state_key="", type="m.room.name")]

    new = store.record_batch(entries, "s1")

    assert new == entries
    assert store.checkpoint() == "s1"
    assert all(store.is_known(e.event_id) for e in entries)
    assert store.pending_entries() == entries


def test_record_batch_ignores_known_event_ids(store: Store) -> None:
    store.record_batch([_entry("$a"), _entry("$b")], "s1")

    new = store.record_batch([_entry("$b", body="replayed"), _entry("$c")], "s2")

    assert [e.event_id for e in new] == ["$c"]
    assert [e.event_id for e in store.pending_entries()] == ["$a", "$b", "$c"]
    assert store.pending_entries()[1].content["body"] == "hi"
    assert store.checkpoint() == "s2"


def test_record_batch_ignores_duplicates_within_one_batch(store: Store) -> None:
    new = store.record_batch([_entry("$a"), _entry("$a", body="again")], "s1")

    assert [e.event_id for e in new] == ["$a"]
    assert len(store.pending_entries()) == 1


def test_record_batch_failing_midway_keeps_neither_entries_nor_checkpoint(store: Store) -> None:
    store.record_batch([_entry("$old")], "s1")
    unserialisable = _entry("$bad", content={"body": {"a", "set"}})

    with pytest.raises(TypeError):
        store.record_batch([_entry("$good"), unserialisable], "s2")

    assert not store.is_known("$good")
    assert not store.is_known("$bad")
    assert store.checkpoint() == "s1"
    # The failed transaction was rolled back, not left open: the store still writes.
    assert store.record_batch([_entry("$good")], "s3") == [_entry("$good")]


def test_pending_entries_keep_arrival_order_across_batches(store: Store) -> None:
    store.record_batch([_entry("$z"), _entry("$m")], "s1")
    store.record_batch([_entry("$a")], "s2")

    pending = store.pending_entries()

    assert [e.event_id for e in pending] == ["$z", "$m", "$a"]
    assert all(e.status is LedgerStatus.PENDING for e in pending)


def test_mark_done_removes_from_pending_but_stays_known(store: Store) -> None:
    store.record_batch([_entry("$a"), _entry("$b")], "s1")

    store.mark_done("$a")

    assert [e.event_id for e in store.pending_entries()] == ["$b"]
    assert store.is_known("$a")
    assert store.record_batch([_entry("$a")], "s2") == []
    assert [e.event_id for e in store.pending_entries()] == ["$b"]


def test_uploads_are_remembered_across_handles_until_their_turn_is_done(
    harness: StoreHarness,
) -> None:
    first = harness.open()
    first.record_batch([_entry("$ask"), _entry("$other")], "s1")
    first.remember_upload("txn-1", "$ask", "mxc://x/one")
    first.remember_upload("txn-2", "$ask", "mxc://x/two")
    first.remember_upload("txn-3", "$other", "mxc://x/three")

    reopened = harness.open()  # as after a crash
    assert reopened.uploaded_media("txn-1") == "mxc://x/one"
    assert reopened.uploaded_media("unknown") is None

    reopened.mark_done("$ask")

    assert reopened.uploaded_media("txn-1") is None
    assert reopened.uploaded_media("txn-2") is None
    assert reopened.uploaded_media("txn-3") == "mxc://x/three"


def test_remember_upload_again_keeps_the_latest_mxc(store: Store) -> None:
    store.remember_upload("txn-1", "$ask", "mxc://x/old")
    store.remember_upload("txn-1", "$ask", "mxc://x/new")

    assert store.uploaded_media("txn-1") == "mxc://x/new"


def test_sent_messages_are_remembered_across_handles_until_their_turn_is_done(
    harness: StoreHarness,
) -> None:
    first = harness.open()
    first.record_batch([_entry("$ask"), _entry("$other")], "s1")
    first.remember_sent_message("txn-answer", "$ask", "$answer")
    first.remember_sent_message("txn-other", "$other", "$other-answer")

    reopened = harness.open()  # as after a crash
    assert reopened.sent_message("txn-answer") == "$answer"
    assert reopened.sent_message("unknown") is None

    reopened.mark_done("$ask")

    assert reopened.sent_message("txn-answer") is None
    assert reopened.sent_message("txn-other") == "$other-answer"


def test_checkpoint_is_none_before_any_batch(store: Store) -> None:
    assert store.checkpoint() is None
    assert store.pending_entries() == []


# -- users, rooms and chats --------------------------------------------------------------------


def test_put_user_round_trips_and_updates(store: Store) -> None:
    store.put_user(UserRecord(matrix_user_id=ALICE))

    store.put_user(UserRecord(matrix_user_id=ALICE, space_id="!s:x", next_chat_index=4))

    assert store.get_user(ALICE) == UserRecord(
        matrix_user_id=ALICE, space_id="!s:x", next_chat_index=4
    )
    assert store.get_user(BOB) is None
    assert store.list_users() == [store.get_user(ALICE)]


def test_put_room_for_a_chat_room_keeps_the_chat_record_in_step(store: Store) -> None:
    store.put_room(_chat_room("!r1:x", "C1", display_name="Old name"))

    store.put_room(_chat_room("!r1:x", "C1", display_name="New name", archived=True))

    assert store.list_chats(ALICE) == [
        ChatRecord(
            matrix_user_id=ALICE,
            chat_id="C1",
            room_id="!r1:x",
            display_name="New name",
            archived=True,
        )
    ]
    room = store.find_chat_room(ALICE, "C1")
    assert room is not None
    assert room.display_name == "New name"
    assert room.archived


def test_put_room_for_a_space_adds_no_chat(store: Store) -> None:
    space = RoomRecord(room_id="!space:x", room_type=RoomType.SPACE, matrix_user_id=ALICE)

    store.put_room(space)

    assert store.get_room("!space:x") == space
    assert store.list_chats(ALICE) == []


def test_delete_room_removes_its_chat(store: Store) -> None:
    store.put_room(_chat_room("!r1:x", "C1", display_name="One"))
    store.put_room(_chat_room("!r2:x", "C2", display_name="Two"))

    store.delete_room("!r1:x")

    assert store.get_room("!r1:x") is None
    assert [c.chat_id for c in store.list_chats(ALICE)] == ["C2"]


def test_add_chat_room_stores_room_chat_and_advanced_user(store: Store) -> None:
    store.put_user(UserRecord(matrix_user_id=ALICE, space_id="!space:x", next_chat_index=1))
    room = _chat_room("!r1:x", "C1", display_name="First")

    store.add_chat_room(
        UserRecord(matrix_user_id=ALICE, space_id="!space:x", next_chat_index=2), room
    )

    user = store.get_user(ALICE)
    assert user is not None
    assert user.next_chat_index == 2
    assert store.get_room("!r1:x") == room
    assert [c.room_id for c in store.list_chats(ALICE)] == ["!r1:x"]


def test_list_chats_orders_by_number_not_text(store: Store) -> None:
    for chat_id in ("C10", "C2", "C1"):
        store.put_room(_chat_room(f"!{chat_id}:x", chat_id, display_name=chat_id))

    chats = store.list_chats(ALICE)

    assert [c.chat_id for c in chats] == ["C1", "C2", "C10"]


def test_list_chats_and_rooms_are_per_user(store: Store) -> None:
    store.put_room(_chat_room("!a:x", "C1", owner=ALICE, display_name="A"))
    store.put_room(_chat_room("!b:x", "C1", owner=BOB, display_name="B"))

    assert [c.room_id for c in store.list_chats(BOB)] == ["!b:x"]
    assert [r.room_id for r in store.list_rooms(ALICE)] == ["!a:x"]
    assert [r.room_id for r in store.list_rooms()] == ["!a:x", "!b:x"]


def test_meta_set_overwrites(store: Store) -> None:
    store.set_meta("device_id", "A")

    store.set_meta("device_id", "B")

    assert store.get_meta("device_id") == "B"
    assert store.get_meta("missing") is None


# -- SQLite specifics --------------------------------------------------------------------------


def _sqlite_with_data(path: Path, *, rows: int = 200) -> None:
    """A real, healthy database several pages long, written by SqliteStore."""
    with SqliteStore(path) as store:
        for i in range(rows):
            store.put_user(UserRecord(matrix_user_id=f"@user{i}:example.org", space_id="!s:x"))


def _plain_sqlite_with_data(path: Path, *, rows: int = 200) -> None:
    """A healthy database in rollback-journal mode, as another tool would leave it."""
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 200,) for _ in range(rows)])
        db.commit()
    finally:
        db.close()


def test_migrates_a_version_1_database_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, migrate_to=1) as old:
        assert old.schema_version == 1
        old.put_user(UserRecord(matrix_user_id=ALICE, space_id="!space:x", next_chat_index=2))
        old.put_room(_chat_room("!r1:x", "C1", display_name="Kept"))

    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        user = store.get_user(ALICE)
        assert user is not None
        assert user.next_chat_index == 2
        assert [c.display_name for c in store.list_chats(ALICE)] == ["Kept"]
        assert store.record_batch([_entry("$a")], "s1") == [_entry("$a")]
        assert store.checkpoint() == "s1"


def test_migrates_a_version_2_database_keeping_its_pending_turns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, migrate_to=2) as old:
        old.record_batch([_entry("$ask")], "s1")

    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [e.event_id for e in store.pending_entries()] == ["$ask"]
        assert store.checkpoint() == "s1"
        store.remember_upload("txn-1", "$ask", "mxc://x/one")
        assert store.uploaded_media("txn-1") == "mxc://x/one"


def test_random_bytes_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = random.Random(1).randbytes(8192)
    path.write_bytes(garbage)

    with pytest.raises(StoreCorrupt) as refused:
        SqliteStore(path)

    assert str(path) in str(refused.value)
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("writer", [_sqlite_with_data, _plain_sqlite_with_data])
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_sqlite_file_is_refused_and_untouched(
    tmp_path: Path, writer: Callable[[Path], None], damage: str
) -> None:
    path = tmp_path / "state.db"
    writer(path)
    healthy = path.read_bytes()
    if damage == "truncated":
        broken = healthy[: len(healthy) // 3]
    else:
        # Keep the 100-byte header so the file still looks like SQLite at a glance.
        broken = healthy[:100] + random.Random(2).randbytes(len(healthy) - 100)
    path.write_bytes(broken)

    with pytest.raises(StoreCorrupt) as refused:
        SqliteStore(path)

    assert str(path) in str(refused.value)
    assert path.read_bytes() == broken


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    before = path.read_bytes()

    with pytest.raises(StoreTooNew) as refused:
        SqliteStore(path)

    assert str(path) in str(refused.value)
    assert "99" in str(refused.value)
    assert path.read_bytes() == before


def test_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"

    with SqliteStore(path):
        mode = stat.S_IMODE(path.stat().st_mode)

    assert mode == 0o600


def test_database_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path):
        pass

    db = sqlite3.connect(path)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()

    assert mode == "wal"


def _refuse_room(path: Path, room_id: str) -> None:
    """A trigger that makes SQLite itself abort any insert of `room_id` into rooms."""
    db = sqlite3.connect(path)
    db.execute(
        f"CREATE TRIGGER refuse_room BEFORE INSERT ON rooms WHEN NEW.room_id = '{room_id}' "
        "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
    )
    db.commit()
    db.close()


def test_add_chat_room_failing_on_the_room_keeps_the_old_user(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.put_user(UserRecord(matrix_user_id=ALICE, next_chat_index=1))
    # A real SQLite failure half-way through the transaction, after the user write.
    _refuse_room(path, "!boom:x")

    with store, pytest.raises(sqlite3.IntegrityError, match="refused by test trigger"):
        store.add_chat_room(
            UserRecord(matrix_user_id=ALICE, next_chat_index=2),
            _chat_room("!boom:x", "C1", display_name="Boom"),
        )

    with SqliteStore(path) as reopened:
        user = reopened.get_user(ALICE)
        assert user is not None
        assert user.next_chat_index == 1
        assert reopened.get_room("!boom:x") is None
        assert reopened.list_chats(ALICE) == []


def test_apply_rebuild_writes_everything_in_one_go(store: Store) -> None:
    room = _chat_room("!c1:x", "C1", display_name="One")

    store.apply_rebuild(
        users=[UserRecord(matrix_user_id=ALICE, next_chat_index=2)],
        rooms=[room],
        chats=[],
        origins={"$invite": "!c1:x"},
        sequence_floor=42,
    )

    assert store.get_user(ALICE) == UserRecord(matrix_user_id=ALICE, next_chat_index=2)
    assert store.get_room("!c1:x") == room
    assert [c.chat_id for c in store.list_chats(ALICE)] == ["C1"]
    assert store.room_origin("$invite") == "!c1:x"
    assert store.sequence_state().next_value == 42


def test_a_room_origin_is_found_by_its_trigger_only(store: Store) -> None:
    store.set_room_origin("$new", "!c2:x")

    assert store.room_origin("$new") == "!c2:x"
    assert store.room_origin("$other") is None


def test_room_origins_written_before_the_typed_methods_are_still_found(tmp_path: Path) -> None:
    # Databases of earlier versions hold origins as `origin:<event id>` meta rows.
    with SqliteStore(tmp_path / "state.db") as store:
        store.set_meta("origin:$invite", "!c1:x")

        assert store.room_origin("$invite") == "!c1:x"


def test_apply_rebuild_failing_midway_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    _refuse_room(path, "!boom:x")

    with SqliteStore(path) as store, pytest.raises(sqlite3.IntegrityError, match="trigger"):
        store.apply_rebuild(
            users=[UserRecord(matrix_user_id=ALICE, next_chat_index=3)],
            rooms=[_chat_room("!ok:x", "C1"), _chat_room("!boom:x", "C2")],
            chats=[],
            origins={"$e": "!ok:x"},
            sequence_floor=99,
        )

    with SqliteStore(path) as reopened:
        assert reopened.get_user(ALICE) is None
        assert reopened.list_rooms() == []
        assert reopened.room_origin("$e") is None
        assert reopened.sequence_state().next_value == 1


# -- column updates of a user record (issue 14, item 4) ----------------------------------------


def test_add_new_chat_room_never_lowers_the_index_nor_touches_other_columns(store: Store) -> None:
    store.put_user(
        UserRecord(
            matrix_user_id=ALICE, space_id="!s:x", next_chat_index=5, selected_agent_id="helper"
        )
    )
    stale = UserRecord(matrix_user_id=ALICE, space_id="!old:x", next_chat_index=3)

    store.add_new_chat_room(stale, _chat_room("!r2:x", "C2"))

    assert store.get_user(ALICE) == UserRecord(
        matrix_user_id=ALICE, space_id="!s:x", next_chat_index=5, selected_agent_id="helper"
    )
    assert [c.chat_id for c in store.list_chats(ALICE)] == ["C2"]
    store.add_new_chat_room(
        stale.model_copy(update={"next_chat_index": 7}), _chat_room("!r6:x", "C6")
    )
    user = store.get_user(ALICE)
    assert user is not None
    assert user.next_chat_index == 7


def test_add_new_chat_room_inserts_an_unknown_owner_whole(store: Store) -> None:
    owner = UserRecord(matrix_user_id=ALICE, space_id="!s:x", next_chat_index=2)

    store.add_new_chat_room(owner, _chat_room("!r1:x", "C1"))

    assert store.get_user(ALICE) == owner


def test_set_selected_agent_changes_only_that_column(store: Store) -> None:
    store.put_user(UserRecord(matrix_user_id=ALICE, space_id="!s:x", next_chat_index=9))
    stale = UserRecord(matrix_user_id=ALICE, next_chat_index=2, selected_agent_id="helper")

    store.set_selected_agent(stale)

    assert store.get_user(ALICE) == UserRecord(
        matrix_user_id=ALICE, space_id="!s:x", next_chat_index=9, selected_agent_id="helper"
    )
    store.set_selected_agent(UserRecord(matrix_user_id=BOB, selected_agent_id="echo"))
    assert store.get_user(BOB) == UserRecord(matrix_user_id=BOB, selected_agent_id="echo")


# -- ledger retention (issue 14, item 10) ------------------------------------------------------


def _ledger_rows(path: Path) -> dict[str, tuple[str, str, int | None]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT event_id, status, content, done_at FROM ledger").fetchall()
    finally:
        db.close()
    return {event_id: (status, content, done_at) for event_id, status, content, done_at in rows}


def test_a_done_entry_keeps_its_id_but_not_its_message_body(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path) as store:
        store.record_batch([_entry("$a", body="secret plans"), _entry("$b", body="later")], "s1")
        before = time.time()

        store.mark_done("$a")

        assert store.is_known("$a")
        assert [e.content["body"] for e in store.pending_entries()] == ["later"]
    rows = _ledger_rows(path)
    status, content, done_at = rows["$a"]
    assert (status, content) == ("done", "{}")
    assert done_at is not None and done_at >= int(before)
    assert rows["$b"][2] is None


def test_prune_ledger_deletes_old_done_entries_but_each_rooms_newest_and_pending_ones(
    store: Store,
) -> None:
    room_a, room_b = "!a:x", "!b:x"
    store.record_batch(
        [
            _entry("$a1", room_id=room_a),
            _entry("$b1", room_id=room_b),
            _entry("$a2", room_id=room_a),
            _entry("$b2", room_id=room_b),
            _entry("$a3", room_id=room_a),
        ],
        "s1",
    )
    for event_id in ("$a1", "$b1", "$a2", "$b2"):
        store.mark_done(event_id)

    assert store.prune_ledger(time.time() - 3600) == 0
    removed = store.prune_ledger(time.time() + 3600)

    assert removed == 3
    assert [store.is_known(e) for e in ("$a1", "$a2", "$b1")] == [False, False, False]
    assert store.is_known("$b2")  # room B's newest: gap filling stops at it
    assert [e.event_id for e in store.pending_entries()] == ["$a3"]


def test_migration_4_drops_the_bodies_of_done_entries_and_keeps_pending_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, migrate_to=3) as old:
        old.record_batch([_entry("$done", body="old secret"), _entry("$ask", body="q")], "s1")
    db = sqlite3.connect(path)  # mark_done as version 3 did it: the body stayed
    with db:
        db.execute("UPDATE ledger SET status = 'done' WHERE event_id = '$done'")
        [(content,)] = db.execute("SELECT content FROM ledger WHERE event_id = '$done'")
    db.close()
    assert "old secret" in content

    with SqliteStore(path) as store:
        assert store.schema_version >= 4
        assert [e.content["body"] for e in store.pending_entries()] == ["q"]
        assert store.is_known("$done")
    status, content, done_at = _ledger_rows(path)["$done"]
    assert (status, content) == ("done", "{}")
    assert done_at is not None


def test_reserve_chat_index_only_raises_the_index(store: Store) -> None:
    store.put_user(UserRecord(matrix_user_id=ALICE, next_chat_index=4, selected_agent_id="x"))

    store.reserve_chat_index(UserRecord(matrix_user_id=ALICE, next_chat_index=3))
    store.reserve_chat_index(UserRecord(matrix_user_id=ALICE, next_chat_index=5))

    assert store.get_user(ALICE) == UserRecord(
        matrix_user_id=ALICE, next_chat_index=5, selected_agent_id="x"
    )


# -- another process holding the write lock ---------------------------------------------------


def test_a_write_under_another_process_lock_is_refused_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with SqliteStore(tmp_path / "bot.db", busy_timeout=0.01) as store:
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreBusy, match="write lock"):
                store.set_meta("k", "v")
            assert store.get_meta("k") is None  # reads go on (WAL)
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.set_meta("k", "v")  # the same connection writes again once the lock is gone

        assert store.get_meta("k") == "v"
