"""Workspace path rules as pure functions: sanitise names, validate relative paths.

Two directions, two strategies:

- names that come *in* (a Matrix user's file name, user and room ids) are
  *sanitised* by `safe_component` into one harmless path component;
- paths that come *back* from an agent are *validated* by
  `safe_relative_path`, which refuses rather than repairs: a repaired path
  would point at a different file than the agent meant.

The filesystem side (symbolic links) is the workspace implementation's job;
nothing here touches the disk.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import PurePosixPath

from contracts.workspace import UnsafePath

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "SURFACE_DIR",
    "format_timestamp",
    "inbox_relative_path",
    "matrix_id_component",
    "room_directory",
    "room_may_send",
    "safe_component",
    "safe_relative_path",
]

# Most filesystems cap one name at 255 bytes and a path at 4096 (PATH_MAX).
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
SURFACE_DIR = PurePosixPath("surfaces", "matrix")

# Characters that separate paths or are reserved on Windows / SMB shares.
_REPLACED = frozenset('/\\:*?"<>|')
# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# Invisible characters outside the categories above (fillers, variation selectors).
_INVISIBLE = frozenset(
    [
        0x034F,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        0x3164,
        0xFFA0,
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)
_SPACES = re.compile(r" {2,}")
_DOTS = re.compile(r"\.{2,}")
_MAX_EXTENSION_BYTES = 16
_MIN_MAX_LEN = 24
_DIGEST_CHARS = 12


def _filter(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in _REPLACED:
            out.append("_")
        elif ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) in _DROPPED_CATEGORIES or ord(ch) in _INVISIBLE:
            continue
        else:
            out.append(ch)
    return "".join(out)


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `max_bytes`."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        return name, ""
    return stem, "." + ext


def safe_component(name: str, *, max_len: int = 100) -> str:
    """One harmless path component made from any string (a file name, a Matrix id).

    NFKC-normalised (so fullwidth ``／`` or ``．．`` cannot sneak past as
    separators), separators and Windows-reserved characters become ``_``,
    control, bidi, zero-width and other invisible characters are dropped,
    runs of dots collapse, leading/trailing dots and spaces go, reserved
    device names get a ``_`` prefix, and the result fits in `max_len`
    UTF-8 bytes with the extension kept. Never empty (``file``), never
    ``.``/``..``, never starts with a dot. Idempotent.
    """
    if max_len < _MIN_MAX_LEN:
        raise ValueError(f"max_len must be at least {_MIN_MAX_LEN}, got {max_len}")
    max_len = min(max_len, MAX_COMPONENT_BYTES)
    # Twice: dropping characters can make neighbours compose differently.
    text = _filter(unicodedata.normalize("NFKC", name))
    text = _filter(unicodedata.normalize("NFKC", text))
    text = _DOTS.sub(".", _SPACES.sub(" ", text)).strip(" .")
    if not text:
        return "file"
    if text.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) <= max_len:
        return text
    stem, ext = _split_extension(text)
    if len(ext.encode("utf-8")) > min(_MAX_EXTENSION_BYTES, max_len // 4):
        stem, ext = text, ""
    stem = _utf8_prefix(stem, max_len - len(ext.encode("utf-8"))).rstrip(" .")
    # A cut can strip a combining mark off its base; normalise what is left again.
    return unicodedata.normalize("NFKC", stem or "file") + ext


def safe_relative_path(path: str) -> PurePosixPath:
    """Validate a workspace-relative POSIX path given by someone else (an agent).

    Refuses (raises `UnsafePath` with the rule that failed) rather than
    repairs: empty, too long, NUL or control characters, backslashes,
    absolute or drive paths, ``..``, empty parts (``a//b``, trailing ``/``),
    parts over 255 bytes. ``.`` parts are dropped (``./out.txt`` is fine).
    """
    if not path:
        raise UnsafePath(path, "it is empty")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(path, "it is not valid text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(path, f"it is longer than {MAX_PATH_BYTES} bytes")
    if "\0" in path:
        raise UnsafePath(path, "it contains a NUL character")
    if any(unicodedata.category(ch) == "Cc" for ch in path):
        raise UnsafePath(path, "it contains control characters")
    if "\\" in path:
        raise UnsafePath(path, "it contains a backslash")
    if path.startswith("/"):
        raise UnsafePath(path, "it is absolute; give a path relative to the workspace")
    if re.match(r"[A-Za-z]:", path):
        raise UnsafePath(path, "it starts with a drive letter")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            raise UnsafePath(path, "it contains '..'")
        if part == "":
            raise UnsafePath(path, "it has an empty part")
        if part == ".":
            continue
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafePath(path, f"a part is longer than {MAX_COMPONENT_BYTES} bytes")
        parts.append(part)
    if not parts:
        raise UnsafePath(path, "it names the workspace itself, not a file")
    return PurePosixPath(*parts)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:_DIGEST_CHARS]


def matrix_id_component(matrix_id: str) -> str:
    """A directory name for a user or room id: readable, and distinct per id.

    ``@alice:example.org`` -> ``alice_example.org-<12 hex>``. The digest of
    the exact id keeps ids apart that sanitise alike (``@a:b:1`` and
    ``@a_b:1``), and that differ only in case (room ids are case-sensitive,
    a macOS bind mount is not).
    """
    readable = safe_component(matrix_id.lstrip("@!#+$"), max_len=64)
    return f"{readable}-{_digest(matrix_id)}"


def room_directory(user_id: str, room_id: str) -> PurePosixPath:
    """The directory of one room's files: ``surfaces/matrix/<user>/<room>``."""
    return SURFACE_DIR / matrix_id_component(user_id) / matrix_id_component(room_id)


def format_timestamp(timestamp_ms: int) -> str:
    """A millisecond Unix time as a sortable file-name prefix: ``20240115T093012123Z``."""
    try:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"t{timestamp_ms}"[:21]  # nonsense from a server: bounded, still deterministic
    return moment.strftime("%Y%m%dT%H%M%S") + f"{timestamp_ms % 1000:03d}Z"


def inbox_relative_path(
    user_id: str, room_id: str, filename: str, timestamp_ms: int, *, event_id: str
) -> str:
    """Where an incoming file lands: ``<room dir>/inbox/<timestamp>-<event digest>-<name>``.

    Deterministic in its arguments, so a job re-run after a crash finds the
    file it already wrote. The event digest keeps two uploads of
    ``image.png`` in the same millisecond apart.
    """
    prefix = f"{format_timestamp(timestamp_ms)}-{_digest(event_id)[:8]}-"
    name = safe_component(filename, max_len=MAX_COMPONENT_BYTES - len(prefix))
    return str(room_directory(user_id, room_id) / "inbox" / (prefix + name))


def room_may_send(path: PurePosixPath, room_id: str) -> bool:
    """Whether an agent in `room_id` may send the (validated) workspace file `path`.

    Everything under ``surfaces/`` belongs to some room: only this room's own
    directory is allowed, so a prompt-injected agent cannot post another
    user's uploads into this room. Paths elsewhere in the workspace are fine.
    """
    parts = path.parts
    if not parts or parts[0] != SURFACE_DIR.parts[0]:
        return True
    return (
        len(parts) > 4
        and PurePosixPath(*parts[:2]) == SURFACE_DIR
        and parts[3] == matrix_id_component(room_id)
    )
