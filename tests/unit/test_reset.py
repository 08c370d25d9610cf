"""`surface reset`: the plan names what goes, a dry run touches nothing, a real run deletes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runtime.cli import EXIT_CONFIG, EXIT_OK, main
from runtime.reset import plan_reset, run_reset
from runtime.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_environment", "restore_logging")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A database with its WAL files and a nio store, where the settings point."""
    db = tmp_path / "data" / "bot.db"
    store = tmp_path / "data" / "nio"
    store.mkdir(parents=True)
    (store / "session.json").write_text("{}")
    files = {"db": db, "wal": db.with_name("bot.db-wal"), "shm": db.with_name("bot.db-shm")}
    for path in files.values():
        path.write_bytes(b"state")
    monkeypatch.setenv("MATRIX_DB_PATH", str(db))
    monkeypatch.setenv("MATRIX_STORE_PATH", str(store))
    return {**files, "store": store}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_plan_names_the_database_its_wal_files_and_the_nio_store(
    state: dict[str, Path],
) -> None:
    plan = plan_reset(load_settings(), "local-only")

    assert plan.files == [state["db"], state["wal"], state["shm"]]
    assert plan.directories == [state["store"]]


def test_the_plan_leaves_out_what_does_not_exist(tmp_path: Path) -> None:
    plan = plan_reset(load_settings(matrix_db_path=tmp_path / "none.db"), "local-only")

    assert plan.files == []
    assert plan.directories == []
    assert "no local state found" in plan.describe(dry_run=True)


def test_server_mode_lists_what_users_must_do_themselves(state: dict[str, Path]) -> None:
    text = plan_reset(load_settings(), "server-leave-forget").describe(dry_run=True)

    assert "would make the bot leave and forget every room" in text
    assert "each user: leave the 'Lambda — …' Space" in text


@pytest.mark.parametrize("mode", ["local-only", "server-leave-forget"])
def test_a_dry_run_touches_nothing(
    state: dict[str, Path],
    tmp_path: Path,
    mode: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(tmp_path)

    code = main(["reset", "--mode", mode, "--dry-run"])

    assert code == EXIT_OK
    assert snapshot(tmp_path) == before
    out = capsys.readouterr().out
    assert "dry run: nothing is changed" in out
    assert f"would delete file {state['db']}" in out
    assert f"would delete directory {state['store']}" in out


def test_without_yes_and_without_a_terminal_nothing_is_deleted(
    state: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(tmp_path)

    code = main(["reset", "--mode", "local-only"])

    assert code == EXIT_CONFIG
    assert snapshot(tmp_path) == before
    assert "refusing to reset without --yes" in capsys.readouterr().err


def test_a_real_local_reset_deletes_the_planned_state(state: dict[str, Path]) -> None:
    plan = plan_reset(load_settings(), "local-only")

    anyio.run(run_reset, load_settings(), plan)

    assert [p for p in state.values() if p.exists()] == []
