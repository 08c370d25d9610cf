"""``session.json``: the bot's Matrix device and token, kept so restarts resume it.

No nio here: runtime/matrix/snapshot.py reads the session before matrix-nio is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import structlog

__all__ = [
    "SESSION_FILE",
    "StoredSession",
    "read_session",
    "write_private_json",
    "write_session",
]

log = structlog.get_logger(__name__)

SESSION_FILE: Final = "session.json"


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What ``session.json`` holds: enough to resume as the same device."""

    user_id: str
    device_id: str
    access_token: str
    homeserver: str

    def matches(self, *, user_id: str, homeserver: str) -> bool:
        return self.user_id == user_id and _same_url(self.homeserver, homeserver)


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def read_session(path: Path) -> StoredSession | None:
    """The stored session, or None if there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredSession(
            user_id=str(data["user_id"]),
            device_id=str(data["device_id"]),
            access_token=str(data["access_token"]),
            homeserver=str(data["homeserver"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("matrix.session.unreadable", path=str(path), error=type(exc).__name__)
        return None


def write_session(path: Path, session: StoredSession) -> None:
    """Write ``session.json`` atomically with mode 0600 (its directory is made 0700)."""
    write_private_json(path, asdict(session))


def write_private_json(path: Path, data: object) -> None:
    """Write `data` as JSON atomically (temp file, fsync, rename), mode 0600 in a 0700
    directory: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:  # mkstemp creates it 0600
            json.dump(data, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
