"""The shared workspace as the tasks see it (real one: runtime/workspace.py).

The workspace is a directory shared with the agent platform. Everything the
tasks hand around is a *relative* POSIX path inside it; only the workspace
implementation turns one into a filesystem location, and it refuses anything
that would leave the workspace (``..``, absolute paths, symbolic links).

Methods are synchronous filesystem calls; async callers run them in a worker
thread (``anyio.to_thread.run_sync``) so a large write never blocks the loop.

Errors, as a tree (``str(error)`` is a message fit for the user; ``code`` is
machine-readable, for logs and translations):

    WorkspaceError                anything the workspace cannot do
    ├── UnsafePath                the path would leave the workspace or is malformed
    ├── FileTooLarge              over the size limit (SURFACE_MAX_UPLOAD_BYTES)
    ├── WorkspaceFull             the disk or quota is full (ENOSPC, EDQUOT)
    └── WorkspaceFileNotFound     nothing to read at that path
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Protocol

__all__ = [
    "FileTooLarge",
    "UnsafePath",
    "Workspace",
    "WorkspaceError",
    "WorkspaceFileNotFound",
    "WorkspaceFull",
    "human_size",
]


def human_size(size: int) -> str:
    """A byte count as people read it: ``512 bytes``, ``1.5 KB``, ``50 MB``."""
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            text = f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def _shown(text: str, limit: int = 80) -> str:
    """A path or name made safe to echo in a message: no control/bidi characters, bounded."""
    cleaned = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class WorkspaceError(Exception):
    """The workspace could not do what was asked; the message says what and why."""

    code = "workspace_error"


class UnsafePath(WorkspaceError):
    """The path is malformed or would leave the workspace; `reason` says which rule."""

    code = "unsafe_path"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"The path “{_shown(path)}” is not allowed: {reason}.")
        self.path = path
        self.reason = reason


class FileTooLarge(WorkspaceError):
    """A file is over the size limit; `size` is None when only "more than" is known."""

    code = "file_too_large"

    def __init__(self, name: str, *, limit: int, size: int | None = None) -> None:
        if size is None:
            message = f"“{_shown(name)}” is larger than the limit of {human_size(limit)}."
        else:
            message = f"“{_shown(name)}” is {human_size(size)}; the limit is {human_size(limit)}."
        super().__init__(message)
        self.name = name
        self.limit = limit
        self.size = size


class WorkspaceFull(WorkspaceError):
    """The disk or the quota of the workspace is full."""

    code = "workspace_full"

    def __init__(self, path: str) -> None:
        super().__init__(
            f"There is no space left in the workspace to save “{_shown(path)}”; "
            "please ask the operator to free some space."
        )
        self.path = path


class WorkspaceFileNotFound(WorkspaceError):
    """There is no file at the path."""

    code = "file_not_found"

    def __init__(self, path: str) -> None:
        super().__init__(f"There is no file “{_shown(path)}” in the workspace.")
        self.path = path


class Workspace(Protocol):
    """The shared workspace directory. Every `rel_path` is a relative POSIX path.

    Every method validates `rel_path` first and raises `UnsafePath` for a
    path that is absolute, contains ``..``, NUL, control characters or a
    backslash, or passes through a symbolic link inside the workspace.
    """

    @property
    def root(self) -> Path:
        """The workspace directory (absolute)."""
        ...

    def inbox_path(
        self, user_id: str, room_id: str, filename: str, timestamp: int, *, event_id: str
    ) -> str:
        """Where an incoming file goes: ``surfaces/matrix/<user>/<room>/inbox/<ts>-<id>-<name>``.

        Pure and deterministic: the same event (`event_id`, `timestamp` in
        milliseconds, `filename`) always maps to the same path, and two rooms
        never map to the same directory.
        """
        ...

    def write_atomic(self, rel_path: str, data: bytes) -> None:
        """Write `data` at `rel_path` whole or not at all (temp file, fsync, rename).

        Idempotent: when the file already holds exactly `data`, nothing is
        written. Missing directories are created. Raises `WorkspaceFull` when
        the disk is full, `UnsafePath`, or `WorkspaceError`.
        """
        ...

    def read(self, rel_path: str, max_bytes: int) -> bytes:
        """The bytes of a regular file; raises `FileTooLarge` over `max_bytes`.

        Also raises `WorkspaceFileNotFound`, and `UnsafePath` for anything but
        a regular file with a single link (FIFOs, devices, hard links).
        """
        ...

    def file_size(self, rel_path: str) -> int | None:
        """The size of the regular file at `rel_path`; None when there is none.

        A symbolic link or a directory at `rel_path` counts as no file.
        """
        ...

    def resolve(self, rel_path: str) -> Path:
        """The absolute location of `rel_path`, checked at the time of the call.

        Raises `UnsafePath` when it escapes the workspace or passes through a
        symbolic link. The result may not exist yet.
        """
        ...
