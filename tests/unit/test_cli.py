"""`surface check-config`: exit 2 with a message that names the bad field or variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cli import EXIT_CONFIG, EXIT_OK, main

VALID_REGISTRY = """\
agents:
  - id: echo
    name: Echo
    default: true
  - id: helper
    name: Helper
    backend: http
    url: http://platform-agent:8090
"""


pytestmark = pytest.mark.usefixtures("clean_environment", "restore_logging")


def registry_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SURFACE_AGENT_REGISTRY", str(path))
    return path


def test_a_valid_configuration_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_file(tmp_path, monkeypatch, VALID_REGISTRY)

    code = main(["check-config"])

    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "configuration ok" in out
    assert "2 agent(s), default 'echo'" in out


def test_the_builtin_registry_passes_without_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == EXIT_OK
    assert "<built-in>" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        pytest.param(
            "  - id: echo\n    name: Echo\n    backend: telepathy\n", "backend", id="enum"
        ),
        pytest.param("  - id: Not Valid\n    name: Echo\n", "id", id="pattern"),
        pytest.param("  - id: echo\n", "name", id="missing"),
        pytest.param("  - id: echo\n    name: Echo\n    colour: blue\n", "colour", id="extra"),
        pytest.param("  - id: web\n    name: Web\n    backend: http\n", "url", id="no-url"),
    ],
)
def test_a_broken_registry_exits_2_and_names_the_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    entry: str,
    field: str,
) -> None:
    path = registry_file(tmp_path, monkeypatch, "agents:\n" + entry)

    code = main(["check-config"])

    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(path) in err
    assert "entry #1" in err
    # A cross-field rule is reported on the entry, with the field in its message.
    assert f"field '{field}'" in err or f"needs a '{field}'" in err


def test_a_registry_that_is_not_yaml_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_file(tmp_path, monkeypatch, "agents: [unclosed\n")

    assert main(["check-config"]) == EXIT_CONFIG
    assert "not valid YAML" in capsys.readouterr().err


def test_a_missing_registry_file_exits_2_and_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SURFACE_AGENT_REGISTRY", str(tmp_path / "missing.yaml"))

    assert main(["check-config"]) == EXIT_CONFIG
    assert "SURFACE_AGENT_REGISTRY" in capsys.readouterr().err


def test_an_unset_token_variable_exits_2_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_file(
        tmp_path,
        monkeypatch,
        VALID_REGISTRY + "    auth_token_env: HELPER_TOKEN\n",
    )
    monkeypatch.delenv("HELPER_TOKEN", raising=False)

    assert main(["check-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "'helper'" in err
    assert "auth_token_env" in err
    assert "HELPER_TOKEN" in err


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"SURFACE_ROOM_CONCURRENCY": "0"}, "SURFACE_ROOM_CONCURRENCY", id="range"),
        pytest.param({"SURFACE_HTTP_ADDR": "8080"}, "SURFACE_HTTP_ADDR", id="format"),
        pytest.param({"SURFACE_LOG_LEVEL": "loud"}, "SURFACE_LOG_LEVEL", id="choice"),
        pytest.param({"MATRIX_USER_ID": "bot"}, "MATRIX_USER_ID", id="user-id"),
        pytest.param(
            {"MATRIX_HOMESERVER": "https://matrix.example.org"}, "MATRIX_USER_ID", id="missing"
        ),
    ],
)
def test_bad_settings_exit_2_and_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    variable: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code = main(["check-config"])

    assert code == EXIT_CONFIG
    captured = capsys.readouterr()
    assert variable in captured.err
    assert "configuration ok" not in captured.out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_CONFIG
    assert "check-config" in capsys.readouterr().out


# -- the quick-start state (`just run`, MATRIX_HOMESERVER unset) --------------------------------


def test_reset_without_a_homeserver_finds_the_quick_start_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / ".local" / "dev-homeserver"
    (data / "matrix_store").mkdir(parents=True)
    (data / "lambda_matrix.db").write_bytes(b"")

    assert main(["reset", "--mode", "local-only", "--dry-run"]) == EXIT_OK

    out = capsys.readouterr().out
    assert "no local state found" not in out
    assert str(Path(".local/dev-homeserver/lambda_matrix.db")) in out
    assert "truly clean slate" in out and ".local/dev-homeserver" in out


def test_reconcile_without_a_homeserver_or_quick_start_state_says_what_to_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["reconcile", "--dry-run"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "MATRIX_HOMESERVER" in err and "just run" in err


def test_check_config_lists_the_setting_warnings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATRIX_PLATFORM_BACKEND", "mock")
    monkeypatch.setenv("SURFACE_LOCAL", "ru")

    assert main(["check-config"]) == EXIT_OK

    out = capsys.readouterr().out
    assert "MATRIX_PLATFORM_BACKEND is no longer read" in out
    assert "SURFACE_LOCAL is not a setting of this bot; did you mean SURFACE_LOCALE?" in out


def test_run_with_a_broken_registry_exits_2_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no homeserver configured: the embedded quick start
    registry_file(tmp_path, monkeypatch, "agents: [unclosed\n")

    assert main(["run"]) == EXIT_CONFIG
    assert "agents.yaml" in capsys.readouterr().err


def test_the_cli_module_leaves_the_registry_for_later() -> None:
    """`run` sends its start-up snapshot request before the registry's imports (yaml)."""
    import subprocess
    import sys

    probe = "import sys, runtime.cli; print('contracts.registry' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
