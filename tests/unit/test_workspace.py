from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from contracts.workspace import (
    FileTooLarge,
    UnsafePath,
    Workspace,
    WorkspaceFileNotFound,
    WorkspaceFull,
)
from runtime.workspace import DIR_MODE, FILE_MODE, FsWorkspace


@pytest.fixture
def workspace(tmp_path: Path) -> FsWorkspace:
    return FsWorkspace(tmp_path / "ws")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_bytes(b"top secret")
    return secret_dir


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_fs_workspace_satisfies_the_contract(workspace: FsWorkspace) -> None:
    contract: Workspace = workspace

    assert contract.root.is_absolute()


def test_write_then_read_round_trips(workspace: FsWorkspace) -> None:
    workspace.write_atomic("a/b/c.bin", b"\x00payload")

    assert workspace.read("a/b/c.bin", max_bytes=100) == b"\x00payload"
    assert workspace.file_size("a/b/c.bin") == 8


def test_atomic_write_leaves_no_temp_file(workspace: FsWorkspace) -> None:
    workspace.write_atomic("dir/file.txt", b"one")
    workspace.write_atomic("dir/file.txt", b"two")

    assert _names(workspace.root / "dir") == ["file.txt"]
    assert (workspace.root / "dir" / "file.txt").read_bytes() == b"two"


def test_failed_write_leaves_neither_temp_nor_target(
    workspace: FsWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)

    with pytest.raises(WorkspaceFull, match="no space left"):
        workspace.write_atomic("dir/file.txt", b"data")

    assert _names(workspace.root / "dir") == []


def test_failed_write_keeps_the_previous_content(
    workspace: FsWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.write_atomic("f.txt", b"old")

    def quota(fd: int) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "fsync", quota)
    with pytest.raises(WorkspaceFull):
        workspace.write_atomic("f.txt", b"new")

    assert (workspace.root / "f.txt").read_bytes() == b"old"
    assert _names(workspace.root) == ["f.txt"]


def test_identical_write_is_a_no_op(workspace: FsWorkspace) -> None:
    workspace.write_atomic("f.txt", b"same")
    before = (workspace.root / "f.txt").stat()

    workspace.write_atomic("f.txt", b"same")

    after = (workspace.root / "f.txt").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_permissions_ignore_the_umask(workspace: FsWorkspace) -> None:
    old = os.umask(0o077)
    try:
        workspace.write_atomic("new/dir/f.txt", b"x")
    finally:
        os.umask(old)

    assert stat.S_IMODE((workspace.root / "new").stat().st_mode) == DIR_MODE
    assert stat.S_IMODE((workspace.root / "new" / "dir").stat().st_mode) == DIR_MODE
    assert stat.S_IMODE((workspace.root / "new" / "dir" / "f.txt").stat().st_mode) == FILE_MODE


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b", "a\0b", ""])
def test_malformed_paths_are_refused_everywhere(workspace: FsWorkspace, path: str) -> None:
    with pytest.raises(UnsafePath):
        workspace.resolve(path)
    with pytest.raises(UnsafePath):
        workspace.write_atomic(path, b"x")
    with pytest.raises(UnsafePath):
        workspace.read(path, max_bytes=10)


def test_symlinked_directory_in_the_workspace_is_refused(
    workspace: FsWorkspace, outside: Path
) -> None:
    (workspace.root / "inbox").symlink_to(outside)

    with pytest.raises(UnsafePath, match="symbolic link"):
        workspace.resolve("inbox/secret.txt")
    with pytest.raises(UnsafePath):
        workspace.read("inbox/secret.txt", max_bytes=100)
    with pytest.raises(UnsafePath):
        workspace.write_atomic("inbox/planted.txt", b"x")
    with pytest.raises(UnsafePath):
        workspace.file_size("inbox/secret.txt")

    assert _names(outside) == ["secret.txt"]


def test_deep_symlink_is_refused(workspace: FsWorkspace, outside: Path) -> None:
    (workspace.root / "a" / "b").mkdir(parents=True)
    (workspace.root / "a" / "b" / "c").symlink_to(outside)

    with pytest.raises(UnsafePath):
        workspace.read("a/b/c/secret.txt", max_bytes=100)
    with pytest.raises(UnsafePath):
        workspace.resolve("a/b/c/secret.txt")


def test_symlinked_file_is_not_read(workspace: FsWorkspace, outside: Path) -> None:
    (workspace.root / "report.txt").symlink_to(outside / "secret.txt")

    with pytest.raises(UnsafePath):
        workspace.read("report.txt", max_bytes=100)
    with pytest.raises(UnsafePath):
        workspace.resolve("report.txt")
    assert workspace.file_size("report.txt") is None


def test_writing_over_a_planted_file_link_replaces_the_link_not_the_target(
    workspace: FsWorkspace, outside: Path
) -> None:
    (workspace.root / "out.txt").symlink_to(outside / "secret.txt")

    workspace.write_atomic("out.txt", b"ours")

    assert (outside / "secret.txt").read_bytes() == b"top secret"
    assert not (workspace.root / "out.txt").is_symlink()
    assert (workspace.root / "out.txt").read_bytes() == b"ours"


def test_hard_link_is_not_read(workspace: FsWorkspace) -> None:
    workspace.write_atomic("a.txt", b"x")
    os.link(workspace.root / "a.txt", workspace.root / "b.txt")

    with pytest.raises(UnsafePath, match="hard link"):
        workspace.read("b.txt", max_bytes=10)


def test_fifo_is_not_read(workspace: FsWorkspace) -> None:
    os.mkfifo(workspace.root / "pipe")

    with pytest.raises(UnsafePath, match="regular file"):
        workspace.read("pipe", max_bytes=10)


def test_reading_over_the_limit_names_the_limit(workspace: FsWorkspace) -> None:
    workspace.write_atomic("big.bin", b"x" * 2048)

    with pytest.raises(FileTooLarge, match=r"2 KB; the limit is 1 KB") as caught:
        workspace.read("big.bin", max_bytes=1024)
    assert caught.value.limit == 1024


def test_reading_a_missing_file(workspace: FsWorkspace) -> None:
    with pytest.raises(WorkspaceFileNotFound):
        workspace.read("nope/missing.txt", max_bytes=10)
    assert workspace.file_size("nope/missing.txt") is None


def test_resolve_stays_in_the_workspace(workspace: FsWorkspace) -> None:
    assert workspace.resolve("./a/b.txt") == workspace.root / "a" / "b.txt"


def test_temp_names_are_reserved(workspace: FsWorkspace) -> None:
    with pytest.raises(UnsafePath):
        workspace.write_atomic(".lambda-tmp-0123", b"x")
