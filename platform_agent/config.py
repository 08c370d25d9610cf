"""Configuration of the platform-agent service, read once from the environment.

Every setting is named as its environment variable; a bad value fails at
start-up with a message naming the variable and the fix. The token and the
OpenAI key are SecretStr, so they never show up in a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

# Model field -> environment variable.
ENV_NAMES: dict[str, str] = {
    "host": "PLATFORM_AGENT_HOST",
    "port": "PLATFORM_AGENT_PORT",
    "db_path": "PLATFORM_AGENT_DB",
    "backend": "PLATFORM_AGENT_BACKEND",
    "workspace": "PLATFORM_AGENT_WORKSPACE",
    "token": "PLATFORM_AGENT_TOKEN",
    "openai_base_url": "OPENAI_BASE_URL",
    "openai_model": "OPENAI_MODEL",
    "openai_api_key": "OPENAI_API_KEY",
}


class ConfigError(Exception):
    """The environment is invalid; the message names each bad variable and the fix."""


class AgentServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    db_path: Path = Path("platform_agent.db")
    backend: Literal["echo", "openai"] = "echo"
    workspace: Path = Path("workspace")
    token: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None
    # Longest `!slow` the echo backend honours (keeps a typo from hanging a turn for days).
    max_slow_seconds: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _openai_needs_a_model(self) -> AgentServiceConfig:
        if self.backend == "openai":
            if not self.openai_model:
                raise ValueError(
                    "backend 'openai' needs OPENAI_MODEL (the model name the endpoint serves)"
                )
            if not self.openai_base_url.startswith(("http://", "https://")):
                raise ValueError(
                    f"OPENAI_BASE_URL {self.openai_base_url!r} must start with http:// or "
                    "https:// (e.g. http://localhost:11434/v1)"
                )
        return self


def config_from_env(env: Mapping[str, str]) -> AgentServiceConfig:
    """Build the configuration from `env`; empty variables count as unset. Raises ConfigError."""
    values = {field: env[name] for field, name in ENV_NAMES.items() if env.get(name, "").strip()}
    try:
        return AgentServiceConfig.model_validate(values)
    except ValidationError as exc:
        lines = ["platform-agent: invalid configuration:"]
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            name = ENV_NAMES.get(field, "configuration")
            lines.append(f"  - {name}: {err['msg'].removeprefix('Value error, ')}")
        lines.append("Fix these environment variables and start the service again.")
        raise ConfigError("\n".join(lines)) from exc
