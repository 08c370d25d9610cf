"""`surface reconcile` and `surface reset` on the state `just run` keeps (no homeserver set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runtime.dev.homeserver import LocalHomeserver
from runtime.dev.process import ChildProcess, find_free_port


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATRIX_", "SURFACE_"))}
    return {
        **env,
        "SURFACE_DEV_DATA_DIR": str(tmp_path / "dev"),
        "SURFACE_DEV_PORT": str(find_free_port("127.0.0.1")),
        "SURFACE_HTTP_ADDR": f"127.0.0.1:{find_free_port('127.0.0.1')}",
        "SURFACE_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }


def _surface(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_reconcile_and_reset_work_on_the_quick_start_state(
    synapse: LocalHomeserver, tmp_path: Path
) -> None:
    # `synapse` only makes sure Synapse is installed; the quick start runs its own.
    env = _env(tmp_path)
    run = ChildProcess(
        [sys.executable, "-m", "runtime.cli", "run"],
        log_path=tmp_path / "run.log",
        name="surface-run",
        cwd=tmp_path,
        env=env,
    )
    run.start()
    try:
        run.wait_http(f"http://{env['SURFACE_HTTP_ADDR']}/ready", timeout=120, what="ready")
    finally:
        run.stop()
    db = tmp_path / "dev" / "lambda_matrix.db"
    assert db.exists()

    reconciled = _surface(env, tmp_path, "reconcile", "--dry-run")
    assert reconciled.returncode == 0, reconciled.stderr
    assert json.loads(reconciled.stdout)["dry_run"] is True

    dry = _surface(env, tmp_path, "reset", "--mode", "local-only", "--dry-run")
    assert dry.returncode == 0 and "no local state found" not in dry.stdout
    assert "truly clean slate" in dry.stdout
    done = _surface(env, tmp_path, "reset", "--mode", "local-only", "--yes")
    assert done.returncode == 0, done.stderr
    assert not db.exists()
