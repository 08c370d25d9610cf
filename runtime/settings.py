"""Configuration from the environment and `.env`, validated once at start-up.

Every setting is named as its environment variable. A bad value fails fast
with a message that names the setting and the fix. Secrets are SecretStr: they
print as '**********' in repr, logs and errors.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Literal

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


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and `.env`; raises SettingsError naming each setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = ["invalid configuration:"]
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "(settings)"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {name}: {message}")
        lines.append("Fix these in the environment or in .env, then run `surface check-config`.")
        raise SettingsError("\n".join(lines)) from None
