"""The service's durable memory in its own SQLite file.

Per (agent_id, platform_chat_id): the conversation (user and assistant
messages) and a ledger of answered turns by idempotency key, so a replayed
turn gets its recorded reply. Per (agent_id, owner): snapshots, each a copy of
one chat's messages. WAL, one transaction per logical change, schema version
in `PRAGMA user_version` with ordered forward migrations.

The methods are blocking and thread-safe (one lock around the connection);
the service calls them from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from contracts.platform import EmittedFile, Snapshot

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id TEXT NOT NULL,
        platform_chat_id TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL
    );
    CREATE INDEX messages_by_chat ON messages (agent_id, platform_chat_id, id);
    CREATE TABLE turns (
        agent_id TEXT NOT NULL,
        platform_chat_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        sender TEXT,
        reply TEXT NOT NULL,
        files TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (agent_id, platform_chat_id, idempotency_key)
    );
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        source_chat_id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        turns INTEGER NOT NULL,
        messages TEXT NOT NULL
    );
    CREATE INDEX snapshots_by_owner ON snapshots (agent_id, owner, id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class MemoryDatabaseError(Exception):
    """The memory database cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class RecordedTurn:
    reply: str
    files: tuple[EmittedFile, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AgentMemory:
    """Conversation memory, turn ledger and snapshots in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise MemoryDatabaseError(
                f"{path}: cannot open the memory database ({exc}); point PLATFORM_AGENT_DB at a "
                "writable SQLite file"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise MemoryDatabaseError(
                    f"{self.path}: schema version {current} is newer than this service "
                    f"understands ({SCHEMA_VERSION}); upgrade it or use another file"
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def ping(self) -> bool:
        with self._lock:
            return bool(self._db.execute("SELECT 1").fetchone()[0] == 1)

    # -- conversation --------------------------------------------------------------------------

    def history(self, agent_id: str, platform_chat_id: str) -> list[Message]:
        with self._lock:
            rows = self._db.execute(
                "SELECT role, content FROM messages WHERE agent_id = ? AND platform_chat_id = ? "
                "ORDER BY id",
                (agent_id, platform_chat_id),
            ).fetchall()
        return [Message(role=role, content=content) for role, content in rows]

    def recorded_turn(
        self, agent_id: str, platform_chat_id: str, idempotency_key: str
    ) -> RecordedTurn | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply, files FROM turns "
                "WHERE agent_id = ? AND platform_chat_id = ? AND idempotency_key = ?",
                (agent_id, platform_chat_id, idempotency_key),
            ).fetchone()
        if row is None:
            return None
        files = tuple(EmittedFile.model_validate(f) for f in json.loads(row[1]))
        return RecordedTurn(reply=row[0], files=files)

    def record_turn(
        self,
        agent_id: str,
        platform_chat_id: str,
        idempotency_key: str,
        *,
        sender: str | None,
        user_content: str,
        reply: str,
        files: tuple[EmittedFile, ...],
    ) -> bool:
        """Append the exchange to memory and the ledger in one transaction.

        Returns False (and changes nothing) when the key was already recorded.
        """
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM turns "
                "WHERE agent_id = ? AND platform_chat_id = ? AND idempotency_key = ?",
                (agent_id, platform_chat_id, idempotency_key),
            ).fetchone()
            if exists:
                return False
            db.execute(
                "INSERT INTO turns (agent_id, platform_chat_id, idempotency_key, sender, reply, "
                "files, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    agent_id,
                    platform_chat_id,
                    idempotency_key,
                    sender,
                    reply,
                    json.dumps([f.model_dump() for f in files]),
                    _now(),
                ),
            )
            db.executemany(
                "INSERT INTO messages (agent_id, platform_chat_id, role, content) "
                "VALUES (?, ?, ?, ?)",
                [
                    (agent_id, platform_chat_id, "user", user_content),
                    (agent_id, platform_chat_id, "assistant", reply),
                ],
            )
            return True

    def counts(self, agent_id: str, platform_chat_id: str) -> tuple[int, int]:
        """(user turns in memory, snapshots taken of this chat)."""
        with self._lock:
            turns = self._db.execute(
                "SELECT count(*) FROM messages "
                "WHERE agent_id = ? AND platform_chat_id = ? AND role = 'user'",
                (agent_id, platform_chat_id),
            ).fetchone()[0]
            snapshots = self._db.execute(
                "SELECT count(*) FROM snapshots WHERE agent_id = ? AND source_chat_id = ?",
                (agent_id, platform_chat_id),
            ).fetchone()[0]
        return int(turns), int(snapshots)

    # -- snapshots -----------------------------------------------------------------------------

    def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        with self._write() as db:
            rows = db.execute(
                "SELECT role, content FROM messages WHERE agent_id = ? AND platform_chat_id = ? "
                "ORDER BY id",
                (agent_id, platform_chat_id),
            ).fetchall()
            turns = sum(1 for role, _ in rows if role == "user")
            created_at = _now()
            cursor = db.execute(
                "INSERT INTO snapshots (agent_id, owner, source_chat_id, name, created_at, turns, "
                "messages) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    agent_id,
                    owner,
                    platform_chat_id,
                    name,
                    created_at,
                    turns,
                    json.dumps([[role, content] for role, content in rows]),
                ),
            )
        return Snapshot(
            snapshot_id=str(cursor.lastrowid), name=name, created_at=created_at, turns=turns
        )

    def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at, turns FROM snapshots "
                "WHERE agent_id = ? AND owner = ? ORDER BY id",
                (agent_id, owner),
            ).fetchall()
        return [
            Snapshot(snapshot_id=str(sid), name=name, created_at=created_at, turns=turns)
            for sid, name, created_at, turns in rows
        ]

    def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> bool:
        """Replace the chat's messages with the snapshot's; False if the owner has no such one.

        The turn ledger is kept, so a turn answered before the load is still
        not answered twice.
        """
        if not snapshot_id.isdecimal():
            return False
        with self._write() as db:
            row = db.execute(
                "SELECT messages FROM snapshots WHERE id = ? AND agent_id = ? AND owner = ?",
                (int(snapshot_id), agent_id, owner),
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "DELETE FROM messages WHERE agent_id = ? AND platform_chat_id = ?",
                (agent_id, platform_chat_id),
            )
            db.executemany(
                "INSERT INTO messages (agent_id, platform_chat_id, role, content) "
                "VALUES (?, ?, ?, ?)",
                [
                    (agent_id, platform_chat_id, role, content)
                    for role, content in json.loads(row[0])
                ],
            )
            return True
