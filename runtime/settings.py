"""Configuration from the environment and `.env`, validated once at start-up.

Every setting is named as its environment variable. A bad value fails fast
with a message that names the setting and the fix. Secrets are SecretStr: they
print as '**********' in repr, logs and errors.

The old surface's setting names still work, with a one-line deprecation warning
each (`legacy_settings`): SURFACES_WORKSPACE_DIR, MATRIX_AGENT_REGISTRY_PATH and
its default registry file config/matrix-agents.yaml (when it exists);
MATRIX_PLATFORM_BACKEND gets a warning naming what replaced it. Any other
MATRIX_* / SURFACE_* variable in the environment or `.env` that no setting
reads gets a warning naming the closest known one (a typo is never silent).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

USER_ID_PATTERN = re.compile(r"^@[^:\s]+:[^\s]+$")


class SettingsError(Exception):
    """The configuration is invalid; the message names each bad setting and the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    matrix_homeserver: str | None = Field(
        default=None, description="Homeserver URL; unset = embedded local Synapse (dev)."
    )
    matrix_user_id: str | None = Field(default=None, description="The bot's Matrix user id.")
    matrix_password: SecretStr | None = None
    matrix_access_token: SecretStr | None = None
    matrix_device_name: str = "lambda-surface"
    matrix_db_path: Path = Path("lambda_matrix.db")
    matrix_store_path: Path = Path("matrix_store")
    # Encrypts the crypto store's keys (nio's pickle key); without it a random key is
    # kept in the store directory. Changing it makes the store unreadable.
    matrix_store_passphrase: SecretStr | None = None

    surface_workspace_dir: Path = Path("workspace")
    surface_agent_registry: Path | None = None
    surface_allowed_users: Annotated[tuple[str, ...], NoDecode] = ()
    surface_http_addr: str = "127.0.0.1:8080"
    surface_log_format: Literal["auto", "json", "console"] = "auto"
    surface_log_level: Literal["debug", "info", "warning", "error"] = "info"
    surface_locale: Literal["en", "ru"] = "en"
    surface_max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    surface_room_concurrency: int = Field(default=128, ge=1, le=1024)
    surface_stream_edit_interval: float = Field(default=1.0, ge=0.05, le=60)
    surface_stream_max_edits: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Edits one answer message may have, the final one included.",
    )
    surface_stream_first_chars: int = Field(
        default=300,
        ge=0,
        le=30_000,
        description="Characters an answer's first (notifying) message waits for.",
    )
    surface_stream_first_wait: float = Field(
        default=15.0,
        ge=0,
        le=600,
        description="Seconds an answer's first message waits at most for those characters.",
    )
    surface_max_chats_per_user: int = Field(default=200, ge=1, le=100_000)
    surface_edit_window: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="Seconds after an answer's last change in which editing the question "
        "asks the agent again and edits the answer; 0: only while the answer streams.",
    )
    surface_ledger_retention_days: float = Field(default=7.0, gt=0, le=3650)
    surface_turn_timeout: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Seconds one agent turn may take in all; then it is stopped with a notice.",
    )
    surface_turn_max_chars: int = Field(
        default=100_000,
        ge=1000,
        le=10_000_000,
        description="Characters one answer may have; longer ones are cut off with a notice.",
    )
    surface_shutdown_grace: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="Seconds in-flight turns may take to finish after SIGTERM before they "
        "are cancelled (and replayed after the restart); keep it below the container's "
        "stop timeout minus 5 s of cleanup.",
    )
    surface_encrypt_rooms: bool = True
    surface_decrypt_grace: float = Field(default=15.0, ge=0, le=600)
    surface_dev_data_dir: Path = Path(".local/dev-homeserver")
    surface_dev_port: int = Field(default=8008, ge=0, le=65535)

    @field_validator("surface_allowed_users", mode="before")
    @classmethod
    def _split_allowed(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("surface_allowed_users")
    @classmethod
    def _check_allowed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern.startswith("@") or ":" not in pattern:
                raise ValueError(
                    f"{pattern!r} is not a user id or glob; use e.g. '@alice:example.org' "
                    "or '@*:example.org'"
                )
        return value

    @field_validator("matrix_user_id")
    @classmethod
    def _check_user_id(cls, value: str | None) -> str | None:
        if value is not None and not USER_ID_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a Matrix user id; use '@bot:example.org'")
        return value

    @field_validator("matrix_homeserver")
    @classmethod
    def _check_homeserver(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} must be a URL such as https://matrix.example.org")
        return value.rstrip("/") if value else value

    @field_validator("surface_http_addr")
    @classmethod
    def _check_http_addr(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} must be HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
        return value

    @model_validator(mode="after")
    def _credentials_with_homeserver(self) -> Settings:
        if self.matrix_homeserver is not None:
            if self.matrix_user_id is None:
                raise ValueError("MATRIX_USER_ID is required when MATRIX_HOMESERVER is set")
            if self.matrix_password is None and self.matrix_access_token is None:
                raise ValueError(
                    "set MATRIX_PASSWORD or MATRIX_ACCESS_TOKEN for the bot account "
                    "(MATRIX_HOMESERVER is set)"
                )
        return self

    @property
    def embedded(self) -> bool:
        """No homeserver configured: run against a local Synapse (development default)."""
        return self.matrix_homeserver is None

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.surface_http_addr.rpartition(":")
        return host.strip("[]"), int(port)

    def is_allowed(self, user_id: str) -> bool:
        """Whether `user_id` may use the bot. Empty list: users of the bot's own server."""
        patterns = self.surface_allowed_users
        if not patterns and self.matrix_user_id:
            patterns = ("@*:" + self.matrix_user_id.split(":", 1)[1],)
        return any(fnmatch.fnmatchcase(user_id, p) for p in patterns)


# Old name -> the setting that replaced it (same meaning, value taken over).
LEGACY_ALIASES: dict[str, str] = {
    "SURFACES_WORKSPACE_DIR": "SURFACE_WORKSPACE_DIR",
    "MATRIX_AGENT_REGISTRY_PATH": "SURFACE_AGENT_REGISTRY",
}
# Old names whose meaning moved elsewhere: ignored, with a warning saying where.
LEGACY_REPLACED: dict[str, str] = {
    "MATRIX_PLATFORM_BACKEND": (
        "each agent's `backend` in the agent registry (SURFACE_AGENT_REGISTRY); without a "
        "registry the built-in echo agent is used"
    ),
}
LEGACY_REGISTRY_FILE = Path("config/matrix-agents.yaml")
# MATRIX_* / SURFACE_* variables that are not bot settings but are known: read by the
# compose files, the e2e tests, the benchmarks and the deploy scripts.
OTHER_VARIABLES = frozenset(
    {
        "SURFACE_IMAGE",
        "SURFACE_IMAGE_TAG",
        "SURFACE_HTTP_PORT",
        "SURFACE_WORKSPACE_VOLUME",
        "SURFACE_WORKSPACE_EXTERNAL",
        "SURFACE_REQUIRE_E2E",
        "SURFACE_CHAOS_KILLS",
        "SURFACE_CHAOS_SEED",
        "SURFACE_DOCKER_DIR",
        "SURFACE_DOCKER_START_TIMEOUT",
        "SURFACE_PULL_TIMEOUT",
    }
)


@dataclass(frozen=True)
class LegacySettings:
    """What the old names and unknown variables mean: values to use, lines to warn."""

    overrides: dict[str, object] = field(default_factory=dict)  # field name -> value
    warnings: list[str] = field(default_factory=list)


def known_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def legacy_settings(
    environ: Mapping[str, str], dotenv: Mapping[str, str | None], *, cwd: Path
) -> LegacySettings:
    """Map the old setting names onto the current ones and name unknown variables. Pure.

    `environ` wins over `dotenv`, as for the settings themselves. A current name that is
    set wins over its old alias (the alias is then named as ignored).
    """
    merged = {k.upper(): v for k, v in dotenv.items() if v is not None}
    merged.update({k.upper(): v for k, v in environ.items()})
    known = known_variables()
    result = LegacySettings()
    for old, new in LEGACY_ALIASES.items():
        if old not in merged:
            continue
        if new in merged:
            result.warnings.append(f"{old} is deprecated and ignored: {new} is set")
        else:
            result.overrides[new.lower()] = merged[old]
            result.warnings.append(f"{old} is deprecated: use {new} (value taken over)")
    for old, replacement in LEGACY_REPLACED.items():
        if old in merged:
            result.warnings.append(f"{old} is no longer read: replaced by {replacement}")
    registry_set = "SURFACE_AGENT_REGISTRY" in merged or "surface_agent_registry" in (
        result.overrides
    )
    if not registry_set and (cwd / LEGACY_REGISTRY_FILE).is_file():
        result.overrides["surface_agent_registry"] = cwd / LEGACY_REGISTRY_FILE
        result.warnings.append(
            f"using the old default registry {LEGACY_REGISTRY_FILE} (deprecated): set "
            f"SURFACE_AGENT_REGISTRY={LEGACY_REGISTRY_FILE} or move it"
        )
    legacy = set(LEGACY_ALIASES) | set(LEGACY_REPLACED) | OTHER_VARIABLES
    for name in sorted(merged):
        if not name.startswith(("MATRIX_", "SURFACE_")) or name in known | legacy:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "`surface check-config` lists them"
        result.warnings.append(f"{name} is not a setting of this bot; {hint}")
    return result


def read_legacy_settings(env_file: Path = Path(".env")) -> LegacySettings:
    """`legacy_settings` of this process's environment and `.env`."""
    dotenv = dotenv_values(env_file) if env_file.is_file() else {}
    return legacy_settings(os.environ, dotenv, cwd=Path.cwd())


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and `.env`; raises SettingsError naming each setting.

    Old setting names are taken over (see `legacy_settings`; `read_legacy_settings`
    gives the warnings to show).
    """
    legacy = read_legacy_settings()
    try:
        return Settings(**{**legacy.overrides, **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = ["invalid configuration:"]
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "(settings)"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {name}: {message}")
        lines.append("Fix these in the environment or in .env, then run `surface check-config`.")
        raise SettingsError("\n".join(lines)) from None
