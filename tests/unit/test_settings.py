"""Settings: defaults, parsing, errors that name the variable, and secrets that never leak."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest
import structlog

from runtime.logging import configure_logging
from runtime.settings import SettingsError, load_settings, read_legacy_settings

PASSWORD = "pw-7f3a9c-do-not-print"
TOKEN = "syt_tok-51be02-do-not-print"


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def remote_homeserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_HOMESERVER", "https://matrix.example.org/")
    monkeypatch.setenv("MATRIX_USER_ID", "@bot:example.org")
    monkeypatch.setenv("MATRIX_PASSWORD", PASSWORD)
    monkeypatch.setenv("MATRIX_ACCESS_TOKEN", TOKEN)


def _refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    return str(refused.value)


def test_defaults_run_embedded_with_local_paths() -> None:
    settings = load_settings()

    assert settings.matrix_db_path == Path("lambda_matrix.db")
    assert settings.matrix_store_path == Path("matrix_store")
    assert settings.embedded
    assert settings.surface_allowed_users == ()
    assert settings.http_host_port == ("127.0.0.1", 8080)


def test_chats_per_user_and_ledger_retention_have_documented_defaults() -> None:
    settings = load_settings()

    assert settings.surface_max_chats_per_user == 200
    assert settings.surface_ledger_retention_days == 7


def test_streaming_has_documented_defaults() -> None:
    settings = load_settings()

    assert settings.surface_stream_max_edits == 50
    assert settings.surface_stream_first_chars == 300
    assert settings.surface_stream_first_wait == 15.0


def test_remote_homeserver_with_credentials_loads(remote_homeserver: None) -> None:
    settings = load_settings()

    assert not settings.embedded
    assert settings.matrix_homeserver == "https://matrix.example.org"
    assert settings.matrix_password is not None
    assert settings.matrix_password.get_secret_value() == PASSWORD


def test_allowed_users_split_on_commas_keeping_globs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURFACE_ALLOWED_USERS", " @alice:example.org, @*:corp.example ,, ")

    settings = load_settings()

    assert settings.surface_allowed_users == ("@alice:example.org", "@*:corp.example")


@pytest.mark.parametrize(
    ("user_id", "allowed"),
    [
        ("@alice:example.org", True),
        ("@bob:corp.example", True),
        ("@bob:example.org", False),
        ("@bob:corp.example.evil", False),
        ("@alice:example.org.evil", False),
    ],
)
def test_is_allowed_matches_listed_ids_and_globs(
    monkeypatch: pytest.MonkeyPatch, user_id: str, allowed: bool
) -> None:
    monkeypatch.setenv("SURFACE_ALLOWED_USERS", "@alice:example.org,@*:corp.example")

    settings = load_settings()

    assert settings.is_allowed(user_id) is allowed


def test_is_allowed_defaults_to_the_bots_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_USER_ID", "@bot:example.org")

    settings = load_settings()

    assert settings.is_allowed("@alice:example.org")
    assert not settings.is_allowed("@alice:elsewhere.org")


def test_is_allowed_refuses_everyone_without_list_or_bot_id() -> None:
    settings = load_settings()

    assert not settings.is_allowed("@alice:example.org")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MATRIX_HOMESERVER", "matrix.example.org"),
        ("MATRIX_USER_ID", "bot"),
        ("SURFACE_HTTP_ADDR", "8080"),
        ("SURFACE_HTTP_ADDR", "localhost:http"),
        ("SURFACE_HTTP_ADDR", "0.0.0.0:70000"),
        ("SURFACE_LOG_FORMAT", "yaml"),
        ("SURFACE_ALLOWED_USERS", "@alice:example.org,bob"),
        ("SURFACE_ROOM_CONCURRENCY", "0"),
        ("SURFACE_MAX_UPLOAD_BYTES", "lots"),
        ("SURFACE_MAX_CHATS_PER_USER", "0"),
        ("SURFACE_LEDGER_RETENTION_DAYS", "0"),
        ("SURFACE_STREAM_MAX_EDITS", "0"),
        ("SURFACE_STREAM_FIRST_CHARS", "-1"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    message = _refusal()

    assert f"{variable}:" in message


def test_homeserver_without_user_id_says_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_HOMESERVER", "https://matrix.example.org")
    monkeypatch.setenv("MATRIX_PASSWORD", PASSWORD)

    message = _refusal()

    assert "MATRIX_USER_ID" in message


def test_homeserver_without_credentials_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_HOMESERVER", "https://matrix.example.org")
    monkeypatch.setenv("MATRIX_USER_ID", "@bot:example.org")

    message = _refusal()

    assert "MATRIX_PASSWORD" in message
    assert "MATRIX_ACCESS_TOKEN" in message


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MATRIX_DB_PATH=/data/bot.db\nSURFACE_ALLOWED_USERS=@alice:example.org\nUNRELATED=1\n",
        encoding="utf-8",
    )

    settings = load_settings()

    assert settings.matrix_db_path == Path("/data/bot.db")
    assert settings.surface_allowed_users == ("@alice:example.org",)


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MATRIX_DB_PATH=/from/dotenv.db\n", encoding="utf-8")
    monkeypatch.setenv("MATRIX_DB_PATH", "/from/env.db")

    settings = load_settings()

    assert settings.matrix_db_path == Path("/from/env.db")


def test_bad_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SURFACE_LOG_FORMAT=xml\n", encoding="utf-8")

    message = _refusal()

    assert "SURFACE_LOG_FORMAT:" in message


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.surface_locale = "ru"  # type: ignore[misc]


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_stay_out_of_repr_str_and_json(remote_homeserver: None) -> None:
    settings = load_settings()

    shown = [repr(settings), str(settings), settings.model_dump_json()]

    for text in shown:
        assert PASSWORD not in text
        assert TOKEN not in text
    assert "**********" in shown[2]


def test_secrets_from_dotenv_stay_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"MATRIX_PASSWORD={PASSWORD}\n", encoding="utf-8")

    settings = load_settings()

    assert settings.matrix_password is not None
    assert settings.matrix_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SURFACE_HTTP_ADDR", "nonsense"),
        ("MATRIX_USER_ID", None),  # model-level check: its input is every value, password too
    ],
)
def test_secrets_stay_out_of_settings_error(
    remote_homeserver: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as refused:
        load_settings()

    report = "".join(traceback.format_exception(refused.value))
    assert variable in report
    assert PASSWORD not in report
    assert TOKEN not in report


def test_secrets_stay_out_of_structured_logs(
    remote_homeserver: None, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    configure_logging("json")
    log = structlog.get_logger("test_settings")

    log.info("settings.loaded", settings=settings, values=settings.model_dump())
    log.info("settings.password", password=settings.matrix_password)
    logging.getLogger("stdlib").warning("settings %r", settings)

    output = capsys.readouterr().err
    assert "settings.loaded" in output
    assert "settings.password" in output
    assert "@bot:example.org" in output
    assert PASSWORD not in output
    assert TOKEN not in output


# -- the old surface's names -------------------------------------------------------------------


def test_old_workspace_and_registry_names_are_taken_over_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SURFACES_WORKSPACE_DIR", "/srv/ws")
    monkeypatch.setenv("MATRIX_AGENT_REGISTRY_PATH", "agents.yaml")

    settings = load_settings()
    warnings = read_legacy_settings().warnings

    assert settings.surface_workspace_dir == Path("/srv/ws")
    assert settings.surface_agent_registry == Path("agents.yaml")
    assert "SURFACES_WORKSPACE_DIR is deprecated: use SURFACE_WORKSPACE_DIR" in warnings[0]
    assert any(w.startswith("MATRIX_AGENT_REGISTRY_PATH is deprecated") for w in warnings)


def test_the_current_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURFACES_WORKSPACE_DIR", "/old")
    monkeypatch.setenv("SURFACE_WORKSPACE_DIR", "/new")

    assert load_settings().surface_workspace_dir == Path("/new")
    assert "ignored" in read_legacy_settings().warnings[0]


def test_the_old_default_registry_file_is_used_when_it_exists(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "matrix-agents.yaml").write_text("agents: []\n")

    assert load_settings().surface_agent_registry == tmp_path / "config" / "matrix-agents.yaml"
    assert "config/matrix-agents.yaml" in read_legacy_settings().warnings[0]


def test_without_the_old_registry_file_nothing_is_assumed() -> None:
    assert load_settings().surface_agent_registry is None
    assert read_legacy_settings().warnings == []


def test_platform_backend_warns_what_replaced_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATRIX_PLATFORM_BACKEND", "http")

    [warning] = read_legacy_settings().warnings

    assert warning.startswith("MATRIX_PLATFORM_BACKEND is no longer read")
    assert "agent registry" in warning


def test_an_unknown_variable_names_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SURFACE_LOG_LEVLE", "debug")
    (tmp_path / ".env").write_text("MATRIX_HOMESERVR=https://x.example\n")

    warnings = read_legacy_settings().warnings

    assert "MATRIX_HOMESERVR is not a setting of this bot; did you mean MATRIX_HOMESERVER?" in (
        warnings
    )
    assert any("SURFACE_LOG_LEVLE" in w and "SURFACE_LOG_LEVEL" in w for w in warnings)


def test_known_tooling_variables_are_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURFACE_IMAGE", "x")
    monkeypatch.setenv("SURFACE_WORKSPACE_VOLUME", "shared")
    assert read_legacy_settings().warnings == []
