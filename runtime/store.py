"""SQLite implementation of contracts.store.Store.

WAL mode, one transaction per logical change, `BEGIN IMMEDIATE` for every
read-modify-write, schema version in `PRAGMA user_version` with ordered forward
migrations (runtime/store_schema.py). A corrupt database or one written by a newer
bot is refused with a clear message and never overwritten. Records are written and
read as rows by runtime/store_rows.py.

Writes wait at most `BUSY_TIMEOUT` seconds for another process's write lock (a
`surface reconcile`, a backup, sqlite3 on the command line), then raise
StoreBusy: the wait happens on the event loop, so it is kept short and the
callers retry asynchronously (contracts/store.py). Opening the file and its
migrations wait up to `OPEN_BUSY_TIMEOUT`: nothing else runs yet.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from contracts.state import ChatRecord, RoomRecord, UserRecord
from contracts.store import (
    LedgerEntry,
    SequenceState,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreTooNew,
)
from runtime.store_rows import (
    entry_from_row,
    insert_user_if_missing,
    put_chat,
    put_room,
    put_user,
    raise_next_chat_index,
    raise_sequence_floor,
    room_from_row,
    set_meta,
)
from runtime.store_schema import MIGRATIONS, SCHEMA_VERSION, SQLITE_HEADER

log = structlog.get_logger(__name__)

BUSY_TIMEOUT = 0.05  # seconds a write waits for another process's lock, on the event loop
OPEN_BUSY_TIMEOUT = 30.0  # at start-up, before anything else runs


def read_checkpoint(path: Path) -> str | None:
    """The sync checkpoint in the database at `path`, read-only; None if there is none.

    For runtime/matrix/snapshot.py, before the store is opened: never creates, migrates or
    writes the file, and any problem (no file, not a database, an older schema)
    reads as "no checkpoint". The store itself decides what the file is worth.
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        row = db.execute("SELECT next_batch FROM checkpoint WHERE id = 1").fetchone()
        return str(row[0]) if row else None
    except sqlite3.Error:
        return None
    finally:
        db.close()


class SqliteStore:
    """The bot's durable state in one SQLite file (see contracts.store.Store)."""

    def __init__(
        self, path: Path, *, migrate_to: int = SCHEMA_VERSION, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        _check_existing_file(path)
        _create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=OPEN_BUSY_TIMEOUT)
        try:
            self._open(migrate_to)
        except BaseException:
            # A refused file must not stay open (nor keep -wal/-shm files beside it).
            self._db.close()
            raise
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")

    def _open(self, migrate_to: int) -> None:
        # Every check that can refuse the file runs before the first write: switching
        # to WAL rewrites the file header, and a refused file must stay byte for byte.
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(OPEN_BUSY_TIMEOUT * 1000)}")
            if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self._refuse_newer(int(self._db.execute("PRAGMA user_version").fetchone()[0]))
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{self.path}: the database is damaged or not a SQLite file ({exc}). It was "
                "left untouched. Restore it from a backup, or move it away and start the bot: "
                "reconciliation rebuilds the state from Matrix."
            ) from exc
        if mode != "wal":
            log.warning("store.no_wal", path=str(self.path), journal_mode=mode)
        self._migrate(migrate_to)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, target: int) -> None:
        with self._write() as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            self._refuse_newer(current)
            for version in range(current + 1, target + 1):
                for statement in _statements(MIGRATIONS[version - 1]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version}")
                log.info("store.migrated", path=str(self.path), version=version)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{self.path}: schema version {version} is newer than this bot understands "
                f"({SCHEMA_VERSION}). It was left untouched. Upgrade lambda-surface, or "
                "point MATRIX_DB_PATH at another file."
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One read-modify-write transaction, taken under BEGIN IMMEDIATE.

        Raises StoreBusy when another process holds the write lock past the busy timeout.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if (busy := self._busy(exc)) is not None:
                raise busy from exc
            raise
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and (busy := self._busy(exc)):
                raise busy from exc
            raise

    def _busy(self, exc: sqlite3.OperationalError) -> StoreBusy | None:
        """StoreBusy if `exc` is a lock timeout (SQLITE_BUSY or SQLITE_LOCKED), else None."""
        if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return None
        return StoreBusy(
            f"{self.path}: another process holds the database's write lock (a `surface` "
            "command, a backup?); the bot retries"
        )

    # -- users -------------------------------------------------------------------------------

    def get_user(self, matrix_user_id: str) -> UserRecord | None:
        row = self._db.execute(
            "SELECT * FROM users WHERE matrix_user_id = ?", (matrix_user_id,)
        ).fetchone()
        return UserRecord(**dict(row)) if row else None

    def put_user(self, user: UserRecord) -> None:
        with self._write() as db:
            put_user(db, user)

    def list_users(self) -> list[UserRecord]:
        rows = self._db.execute("SELECT * FROM users ORDER BY matrix_user_id").fetchall()
        return [UserRecord(**dict(r)) for r in rows]

    # -- rooms and chats ---------------------------------------------------------------------

    def get_room(self, room_id: str) -> RoomRecord | None:
        row = self._db.execute("SELECT * FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
        return room_from_row(row) if row else None

    def put_room(self, room: RoomRecord) -> None:
        with self._write() as db:
            put_room(db, room)

    def delete_room(self, room_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM chats WHERE room_id = ?", (room_id,))
            db.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))

    def list_rooms(self, matrix_user_id: str | None = None) -> list[RoomRecord]:
        if matrix_user_id is None:
            rows = self._db.execute("SELECT * FROM rooms ORDER BY room_id").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM rooms WHERE matrix_user_id = ? ORDER BY room_id", (matrix_user_id,)
            ).fetchall()
        return [room_from_row(r) for r in rows]

    def find_chat_room(self, matrix_user_id: str, chat_id: str) -> RoomRecord | None:
        row = self._db.execute(
            "SELECT * FROM rooms WHERE matrix_user_id = ? AND chat_id = ? AND room_type = 'chat'",
            (matrix_user_id, chat_id),
        ).fetchone()
        return room_from_row(row) if row else None

    def list_chats(self, matrix_user_id: str) -> list[ChatRecord]:
        rows = self._db.execute(
            "SELECT * FROM chats WHERE matrix_user_id = ? "
            "ORDER BY CAST(SUBSTR(chat_id, 2) AS INTEGER), chat_id",
            (matrix_user_id,),
        ).fetchall()
        return [ChatRecord(**{**dict(r), "archived": bool(r["archived"])}) for r in rows]

    def put_chat(self, chat: ChatRecord) -> None:
        with self._write() as db:
            put_chat(db, chat)

    def add_chat_room(self, user: UserRecord, room: RoomRecord) -> None:
        with self._write() as db:
            put_user(db, user)
            put_room(db, room)

    def add_new_chat_room(self, user: UserRecord, room: RoomRecord) -> None:
        with self._write() as db:
            raise_next_chat_index(db, user)
            put_room(db, room)

    def reserve_chat_index(self, user: UserRecord) -> None:
        with self._write() as db:
            raise_next_chat_index(db, user)

    def set_selected_agent(self, user: UserRecord) -> None:
        with self._write() as db:
            insert_user_if_missing(db, user)
            db.execute(
                "UPDATE users SET selected_agent_id = ? WHERE matrix_user_id = ?",
                (user.selected_agent_id, user.matrix_user_id),
            )

    # -- the platform-chat sequence ----------------------------------------------------------

    def sequence_state(self) -> SequenceState:
        row = self._db.execute(
            "SELECT next_value, reserved_through FROM sequence WHERE name = 'platform_chat'"
        ).fetchone()
        return SequenceState(next_value=row[0], reserved_through=row[1])

    def allocate_platform_chat_id(self) -> int:
        with self._write() as db:
            next_value, reserved = db.execute(
                "SELECT next_value, reserved_through FROM sequence WHERE name = 'platform_chat'"
            ).fetchone()
            if next_value > reserved:
                raise StoreError(
                    f"platform chat id {next_value} is not reserved yet (reserved through "
                    f"{reserved}); extend the reservation first"
                )
            db.execute(
                "UPDATE sequence SET next_value = ? WHERE name = 'platform_chat'",
                (next_value + 1,),
            )
            return int(next_value)

    def set_reserved_through(self, value: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE sequence SET reserved_through = MAX(reserved_through, ?) "
                "WHERE name = 'platform_chat'",
                (value,),
            )

    def raise_sequence_floor(self, next_value: int) -> None:
        with self._write() as db:
            raise_sequence_floor(db, next_value)

    # -- reconciliation ----------------------------------------------------------------------

    def apply_rebuild(
        self,
        *,
        users: Sequence[UserRecord],
        rooms: Sequence[RoomRecord],
        chats: Sequence[ChatRecord],
        origins: Mapping[str, str],
        sequence_floor: int,
    ) -> None:
        with self._write() as db:
            for user in users:
                put_user(db, user)
            for room in rooms:
                put_room(db, room)
            for chat in chats:
                put_chat(db, chat)
            for trigger_event_id, room_id in origins.items():
                set_meta(db, _origin_key(trigger_event_id), room_id)
            raise_sequence_floor(db, sequence_floor)

    # -- ledger and checkpoint ---------------------------------------------------------------

    def record_batch(self, entries: Sequence[LedgerEntry], checkpoint: str) -> list[LedgerEntry]:
        new: list[LedgerEntry] = []
        with self._write() as db:
            for entry in entries:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO ledger (event_id, room_id, sender, type, state_key, "
                    "content, origin_server_ts, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.event_id,
                        entry.room_id,
                        entry.sender,
                        entry.type,
                        entry.state_key,
                        json.dumps(entry.content, separators=(",", ":")),
                        entry.origin_server_ts,
                        entry.status.value,
                    ),
                )
                if cursor.rowcount:
                    new.append(entry)
            db.execute(
                "INSERT INTO checkpoint (id, next_batch) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET next_batch = excluded.next_batch",
                (checkpoint,),
            )
        return new

    def pending_entries(self) -> list[LedgerEntry]:
        rows = self._db.execute(
            "SELECT * FROM ledger WHERE status = 'pending' ORDER BY seq"
        ).fetchall()
        return [entry_from_row(r) for r in rows]

    def mark_done(self, event_id: str) -> None:
        with self._write() as db:
            # The body is no longer needed once handled: only the id stays (exactly-once).
            db.execute(
                "UPDATE ledger SET status = 'done', content = '{}', done_at = ? WHERE event_id = ?",
                (int(time.time()), event_id),
            )
            db.execute("DELETE FROM uploads WHERE trigger_event_id = ?", (event_id,))

    def prune_ledger(self, done_before: float) -> int:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM ledger WHERE status = 'done' AND done_at < ? AND seq NOT IN "
                "(SELECT MAX(seq) FROM ledger GROUP BY room_id)",
                (done_before,),
            )
            return cursor.rowcount

    def is_known(self, event_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM ledger WHERE event_id = ?", (event_id,)).fetchone()
        return row is not None

    def checkpoint(self) -> str | None:
        row = self._db.execute("SELECT next_batch FROM checkpoint WHERE id = 1").fetchone()
        return str(row[0]) if row else None

    # -- uploads of pending turns ------------------------------------------------------------

    def uploaded_media(self, txn_id: str) -> str | None:
        row = self._db.execute("SELECT mxc FROM uploads WHERE txn_id = ?", (txn_id,)).fetchone()
        return str(row[0]) if row else None

    def remember_upload(self, txn_id: str, trigger_event_id: str, mxc: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO uploads (txn_id, trigger_event_id, mxc) VALUES (?, ?, ?) "
                "ON CONFLICT (txn_id) DO UPDATE SET mxc = excluded.mxc",
                (txn_id, trigger_event_id, mxc),
            )

    # -- answer messages of pending turns --------------------------------------------------
    # Kept in the uploads table: the same lifetime (forgotten when the turn is done) and the
    # same key (a transaction id, never shared between an upload and a message).

    def sent_message(self, txn_id: str) -> str | None:
        return self.uploaded_media(txn_id)

    def remember_sent_message(self, txn_id: str, trigger_event_id: str, event_id: str) -> None:
        self.remember_upload(txn_id, trigger_event_id, event_id)

    # -- room origins (kept in meta) ----------------------------------------------------------

    def room_origin(self, trigger_event_id: str) -> str | None:
        return self.get_meta(_origin_key(trigger_event_id))

    def set_room_origin(self, trigger_event_id: str, room_id: str) -> None:
        self.set_meta(_origin_key(trigger_event_id), room_id)

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            set_meta(db, key, value)


def _check_existing_file(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the database ({exc.strerror}).") from exc
    if header and header != SQLITE_HEADER:
        raise StoreCorrupt(
            f"{path}: this file is not a SQLite database. It was left untouched. Point "
            "MATRIX_DB_PATH at the right file, or move this one away: the bot then rebuilds "
            "its state from Matrix."
        )


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _origin_key(trigger_event_id: str) -> str:
    return f"origin:{trigger_event_id}"
