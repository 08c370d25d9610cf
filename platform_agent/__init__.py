"""The reference platform-agent service: speaks wire protocol v1 (contracts/wire.py).

Keeps conversation memory per (agent_id, platform_chat_id) in its own SQLite
file, de-duplicates turns by idempotency key, saves and loads snapshots, and
answers with a deterministic echo or by forwarding to any OpenAI-compatible
chat-completions endpoint. Imports nothing of ours but `contracts/`.

    create_app(config)      the Starlette application (platform_agent.app)
    config_from_env(env)    configuration from PLATFORM_AGENT_* / OPENAI_* variables
    python -m platform_agent / `platform-agent`   serve it with uvicorn
"""

from __future__ import annotations

from platform_agent.app import create_app
from platform_agent.config import AgentServiceConfig, ConfigError, config_from_env

__all__ = ["AgentServiceConfig", "ConfigError", "config_from_env", "create_app"]
