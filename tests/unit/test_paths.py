from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contracts.workspace import UnsafePath
from runtime.workspace import FsWorkspace
from tasks.files.paths import (
    MAX_COMPONENT_BYTES,
    format_timestamp,
    inbox_relative_path,
    matrix_id_component,
    room_directory,
    room_may_send,
    safe_component,
    safe_relative_path,
)

# Hostile pieces mixed into generated text: separators (also fullwidth ones that
# NFKC turns into separators), dots, NUL, controls, bidi and zero-width tricks.
_NASTY = st.sampled_from(
    [
        "..", ".", "/", "\\", "\0", "\n", "\r", "\t", "\x1b", "\x7f", "~", ":",
        "\u202e", "\u200b", "\u200d", "\ufeff", "\u2066", "\uff0f", "\uff0e\uff0e",
        "\u2024\u2024", "\u3164", "\ufe0f", "CON", "nul", " ", "-", "%2e%2e", "\u0301",
    ]
)  # fmt: skip
HOSTILE = st.lists(st.one_of(st.text(), _NASTY), max_size=12).map("".join)
HOSTILE_LONG = st.one_of(
    HOSTILE, st.text(min_size=200, max_size=2000), HOSTILE.map(lambda s: s * 50)
)


def _escapes(root: Path, rel: str) -> bool:
    target = os.path.normpath(os.path.join(root, rel))
    return os.path.commonpath([root, target]) != str(root)


# -- safe_component ------------------------------------------------------------


@settings(max_examples=500)
@given(HOSTILE_LONG)
@example("..")
@example("../../etc/passwd")
@example("\0")
@example("")
@example("．．／．．／etc")
@example("\u202egpj.exe")
def test_safe_component_is_one_harmless_bounded_component(name: str) -> None:
    result = safe_component(name)

    assert result
    assert result not in (".", "..")
    assert not result.startswith((".", " "))
    assert "/" not in result
    assert "\\" not in result
    assert "\0" not in result
    assert ".." not in result
    assert len(result.encode("utf-8")) <= 100
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in result)
    assert PurePosixPath(result).parts == (result,)


@settings(max_examples=500)
@given(HOSTILE_LONG)
def test_safe_component_is_idempotent(name: str) -> None:
    once = safe_component(name)

    assert safe_component(once) == once


@settings(max_examples=300)
@given(HOSTILE_LONG, st.integers(min_value=24, max_value=400))
def test_safe_component_respects_any_max_len(name: str, max_len: int) -> None:
    result = safe_component(name, max_len=max_len)

    assert 0 < len(result.encode("utf-8")) <= min(max_len, MAX_COMPONENT_BYTES)


def test_safe_component_keeps_extension_when_truncating() -> None:
    result = safe_component("a" * 300 + ".pdf")

    assert result.endswith(".pdf")
    assert len(result.encode("utf-8")) == 100


def test_safe_component_truncates_multibyte_names_on_character_boundaries() -> None:
    result = safe_component("写真" * 100 + ".jpg")

    assert result.endswith(".jpg")
    assert len(result.encode("utf-8")) <= 100
    assert result.encode("utf-8").decode("utf-8") == result


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "file"),
        ("...", "file"),
        ("..", "file"),
        (".bashrc", "bashrc"),
        ("../../etc/passwd", "_._etc_passwd"),
        ("a\u202etxt.exe", "atxt.exe"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("ｆｕｌｌ／ｗｉｄｔｈ", "full_width"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("Präsentation 2024.pdf", "Präsentation 2024.pdf"),
        ("line\nbreak.txt", "line break.txt"),
    ],
)
def test_safe_component_examples(name: str, expected: str) -> None:
    assert safe_component(name) == expected


def test_safe_component_rejects_a_uselessly_small_max_len() -> None:
    with pytest.raises(ValueError, match="max_len"):
        safe_component("x", max_len=3)


# -- safe_relative_path -----------------------------------------------------------


@settings(max_examples=500)
@given(HOSTILE_LONG)
@example("../x")
@example("a/../../x")
@example("/etc/passwd")
@example("C:\\Windows")
@example("a//b")
@example("./a/./b")
def test_safe_relative_path_never_leaves_the_root(path: str) -> None:
    root = Path("/workspace")
    try:
        result = safe_relative_path(path)
    except UnsafePath:
        return  # refusing is always safe

    assert not result.is_absolute()
    assert ".." not in result.parts
    assert "" not in result.parts
    assert "\0" not in str(result)
    assert not _escapes(root, str(result))
    assert len(str(result).encode("utf-8")) <= 4096


@pytest.mark.parametrize(
    "path",
    [
        "",
        ".",
        "/etc/passwd",
        "../secret",
        "a/../../secret",
        "a/..",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\0b",
        "a\nb",
        "C:/x",
        "x" * 256,
        "a/" * 3000 + "b",
        "\ud800",
    ],
)
def test_safe_relative_path_refuses(path: str) -> None:
    with pytest.raises(UnsafePath):
        safe_relative_path(path)


def test_safe_relative_path_drops_dot_parts() -> None:
    assert safe_relative_path("./out/./report.pdf") == PurePosixPath("out/report.pdf")


# -- inbox paths ---------------------------------------------------------------


@settings(max_examples=500)
@given(
    user=HOSTILE_LONG,
    room=HOSTILE_LONG,
    filename=HOSTILE_LONG,
    event_id=st.text(),
    timestamp=st.integers(min_value=-(2**70), max_value=2**70),
)
def test_inbox_path_is_always_a_safe_path_in_the_rooms_inbox(
    user: str, room: str, filename: str, event_id: str, timestamp: int
) -> None:
    rel = inbox_relative_path(user, room, filename, timestamp, event_id=event_id)

    path = safe_relative_path(rel)  # would raise if unsafe
    assert str(path) == rel
    assert path.parent == room_directory(user, room) / "inbox"
    assert len(path.parts) == 6
    assert all(0 < len(p.encode("utf-8")) <= MAX_COMPONENT_BYTES for p in path.parts)
    assert not _escapes(Path("/workspace"), rel)
    assert room_may_send(path, room)


@settings(max_examples=300, deadline=None)
@given(user=HOSTILE_LONG, room=HOSTILE_LONG, filename=HOSTILE_LONG)
def test_inbox_path_resolves_inside_a_real_workspace(
    user: str, room: str, filename: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workspace = FsWorkspace(tmp_path_factory.getbasetemp() / "property-workspace")

    resolved = workspace.resolve(workspace.inbox_path(user, room, filename, 0, event_id="$e"))

    assert resolved.is_relative_to(workspace.root)


def test_inbox_path_is_deterministic_and_sortable() -> None:
    first = inbox_relative_path("@a:x", "!r:x", "p.png", 1_700_000_000_000, event_id="$1")
    again = inbox_relative_path("@a:x", "!r:x", "p.png", 1_700_000_000_000, event_id="$1")
    other_event = inbox_relative_path("@a:x", "!r:x", "p.png", 1_700_000_000_000, event_id="$2")

    assert first == again
    assert first != other_event
    assert PurePosixPath(first).name.startswith("20231114T221320000Z-")
    assert first.endswith("-p.png")


@settings(max_examples=500)
@given(st.text(min_size=1), st.text(min_size=1))
@example("!AbC:x", "!abc:x")
@example("@a:b:1", "@a_b:1")
def test_distinct_ids_never_share_a_directory_even_case_insensitively(a: str, b: str) -> None:
    if a == b:
        return

    assert matrix_id_component(a).casefold() != matrix_id_component(b).casefold()


def test_room_directory_is_readable() -> None:
    directory = room_directory("@alice:example.org", "!abc:example.org")

    assert directory.parts[:2] == ("surfaces", "matrix")
    assert directory.parts[2].startswith("alice_example.org-")
    assert directory.parts[3].startswith("abc_example.org-")


def test_format_timestamp_bounds_nonsense() -> None:
    assert format_timestamp(0) == "19700101T000000000Z"
    assert len(format_timestamp(10**30)) <= 21


# -- which room may send what --------------------------------------------------


def test_room_may_send_its_own_files_and_files_outside_surfaces() -> None:
    own = room_directory("@u:x", "!mine:x") / "inbox" / "a.png"

    assert room_may_send(own, "!mine:x")
    assert room_may_send(PurePosixPath("out/report.pdf"), "!mine:x")


def test_room_may_not_send_another_rooms_files() -> None:
    other = room_directory("@v:x", "!theirs:x") / "inbox" / "secret.pdf"

    assert not room_may_send(other, "!mine:x")
    assert not room_may_send(PurePosixPath("surfaces/matrix/u"), "!mine:x")
    assert not room_may_send(PurePosixPath("surfaces/other/x.txt"), "!mine:x")
