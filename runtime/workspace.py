"""The workspace on the local filesystem, hardened against a hostile co-tenant.

The agent platform writes into the same directory, so anything inside it may
have been planted: a symbolic link where a directory should be, a FIFO where a
file should be, a hard link to a file outside. Every operation therefore walks
the path one component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)``
from a descriptor of the root, and does its work relative to the descriptor of
the final directory. A link swapped in between a check and a use cannot
redirect us: there is no separate check.

Directories are created 0o750 and files 0o640 (the platform reads them through
the group), whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import structlog

from contracts.workspace import (
    FileTooLarge,
    UnsafePath,
    WorkspaceError,
    WorkspaceFileNotFound,
    WorkspaceFull,
)
from tasks.files.paths import inbox_relative_path, safe_relative_path

__all__ = ["DIR_MODE", "FILE_MODE", "FsWorkspace"]

DIR_MODE = 0o750
FILE_MODE = 0o640

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a planted FIFO must not hang; it is harmless for regular files.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_TEMP_PREFIX = ".lambda-tmp-"
_CHUNK = 1024 * 1024
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _translate(error: OSError, rel_path: str) -> WorkspaceError:
    """The workspace error a user can act on, for an OS error on `rel_path`."""
    if error.errno in _FULL:
        return WorkspaceFull(rel_path)
    if error.errno == errno.ELOOP:
        return UnsafePath(rel_path, "it passes through a symbolic link")
    if error.errno == errno.ENOENT:
        return WorkspaceFileNotFound(rel_path)
    if error.errno in (errno.ENOTDIR, errno.EISDIR):
        return UnsafePath(rel_path, "a part of it is not what it should be (file or directory)")
    if error.errno in (errno.EACCES, errno.EPERM):
        return WorkspaceError(f"The workspace does not allow access to “{rel_path}”.")
    if error.errno == errno.EROFS:
        return WorkspaceError("The workspace is read-only; please tell the operator.")
    return WorkspaceError(f"The workspace could not handle “{rel_path}” ({error.strerror}).")


class FsWorkspace:
    """A `contracts.workspace.Workspace` on a local directory (POSIX only).

    The root itself is resolved once (an operator may point it through a
    symbolic link); below the root no link is ever followed.
    """

    def __init__(self, root: Path) -> None:
        root = root.expanduser().resolve()
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if not root.is_dir():
            raise WorkspaceError(f"The workspace {root} is not a directory.")
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def inbox_path(
        self, user_id: str, room_id: str, filename: str, timestamp: int, *, event_id: str
    ) -> str:
        return inbox_relative_path(user_id, room_id, filename, timestamp, event_id=event_id)

    def resolve(self, rel_path: str) -> Path:
        parts = safe_relative_path(rel_path).parts
        current = self._root
        for part in parts:
            current = current / part
            try:
                mode = current.lstat().st_mode
            except FileNotFoundError:
                break  # the rest does not exist yet, so cannot be a link
            except OSError as error:
                raise _translate(error, rel_path) from error
            if stat.S_ISLNK(mode):
                raise UnsafePath(rel_path, "it passes through a symbolic link")
        return self._root.joinpath(*parts)

    def file_size(self, rel_path: str) -> int | None:
        parts = safe_relative_path(rel_path).parts
        try:
            dir_fd = self._open_dir(parts[:-1], create=False, rel=rel_path)
        except WorkspaceFileNotFound:
            return None
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _translate(error, rel_path) from error
        finally:
            os.close(dir_fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def read(self, rel_path: str, max_bytes: int) -> bytes:
        parts = safe_relative_path(rel_path).parts
        dir_fd = self._open_dir(parts[:-1], create=False, rel=rel_path)
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            raise _translate(error, rel_path) from error
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(rel_path, "it is not a regular file")
            if st.st_nlink != 1:
                # Another name for this inode may live outside the workspace.
                raise UnsafePath(rel_path, "it is a hard link")
            if st.st_size > max_bytes:
                raise FileTooLarge(parts[-1], limit=max_bytes, size=st.st_size)
            chunks: list[bytes] = []
            remaining = max_bytes + 1  # one byte more tells a file that grew meanwhile
            while remaining > 0:
                chunk = os.read(fd, min(_CHUNK, remaining))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as error:
            raise _translate(error, rel_path) from error
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise FileTooLarge(parts[-1], limit=max_bytes)
        return data

    def write_atomic(self, rel_path: str, data: bytes) -> None:
        parts = safe_relative_path(rel_path).parts
        name = parts[-1]
        if name.startswith(_TEMP_PREFIX):
            raise UnsafePath(rel_path, "the name is reserved for temporary files")
        dir_fd = self._open_dir(parts[:-1], create=True, rel=rel_path)
        try:
            if self._holds(dir_fd, name, data):
                log.debug("workspace.write_skipped", path=rel_path, reason="same_content")
                return
            self._write_replace(dir_fd, name, data)
        except OSError as error:
            raise _translate(error, rel_path) from error
        finally:
            os.close(dir_fd)
        log.debug("workspace.written", path=rel_path, size=len(data))

    # -- internals -------------------------------------------------------

    def _open_dir(self, parts: Sequence[str], *, create: bool, rel: str) -> int:
        """A descriptor of the directory `parts` below the root, never via a link.

        Creates missing directories (DIR_MODE) when `create`; `rel` is the
        path named in errors. The caller closes the descriptor.
        """
        try:
            fd = os.open(self._root, _DIR_FLAGS & ~os.O_NOFOLLOW)
        except OSError as error:
            raise _translate(error, rel) from error
        try:
            for part in parts:
                fd = self._open_child_dir(fd, part, create=create)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(rel, "it passes through a symbolic link or a file") from error
            raise _translate(error, rel) from error
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _open_child_dir(parent_fd: int, name: str, *, create: bool) -> int:
        """Open `name` below `parent_fd` as a directory, then close `parent_fd`.

        On error `parent_fd` stays open (the caller owns it).
        """
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            # Created concurrently? The open below checks what it is.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
            child = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            try:
                os.fchmod(child, DIR_MODE)  # the umask may have taken bits away
            except BaseException:
                os.close(child)
                raise
        os.close(parent_fd)
        return child

    @staticmethod
    def _holds(dir_fd: int, name: str, data: bytes) -> bool:
        """Whether `name` is already a regular file with exactly `data`."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except (FileNotFoundError, IsADirectoryError):
            return False
        except OSError as error:
            if error.errno == errno.ELOOP:
                return False  # a planted link: replacing it (never following it) is safe
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
                return False
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                chunk = os.read(fd, _CHUNK)
                if not chunk or view[offset : offset + len(chunk)] != chunk:
                    return False
                offset += len(chunk)
            return os.read(fd, 1) == b""
        finally:
            os.close(fd)

    @staticmethod
    def _write_replace(dir_fd: int, name: str, data: bytes) -> None:
        temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, _TEMP_FLAGS, FILE_MODE, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename(2) replaces a link at `name` itself; it never follows it.
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                log.warning("workspace.temp_left_behind", temp=temp)
            raise
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
