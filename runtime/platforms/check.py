"""Agent registry checks for `surface check-config`.

`check_agents` is offline (the registry against the environment);
`probe_agents` asks every HTTP agent's health endpoint. Both return problems
as sentences that name the agent id, the field and the fix; an empty list
means all is well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anyio
import httpx

from contracts.platform import PlatformError
from contracts.registry import AgentBackend, AgentEntry, AgentRegistry
from runtime.platforms.http import HttpPlatform, RetryPolicy

DEFAULT_PROBE_TIMEOUT = 5.0


def _url_problem(agent: AgentEntry) -> str | None:
    fix = "set it to the platform's base url, e.g. http://platform-agent:8090"
    if not agent.url:
        return f"agent {agent.id!r}: field 'url' is missing for backend 'http'; {fix}"
    if any(ch.isspace() for ch in agent.url):
        return f"agent {agent.id!r}: field 'url' {agent.url!r} contains whitespace; {fix}"
    try:
        url = httpx.URL(agent.url)
        port = url.port  # parses the port; a bad one raises
    except (httpx.InvalidURL, ValueError) as exc:
        return f"agent {agent.id!r}: field 'url' {agent.url!r} cannot be parsed ({exc}); {fix}"
    if url.scheme not in ("http", "https") or not url.host:
        return f"agent {agent.id!r}: field 'url' {agent.url!r} needs http(s)://host; {fix}"
    if port is not None and not 0 < port < 65536:
        return f"agent {agent.id!r}: field 'url' {agent.url!r} has port {port}; {fix}"
    if url.query or url.fragment:
        return (
            f"agent {agent.id!r}: field 'url' {agent.url!r} has a query or fragment, which the "
            f"wire protocol does not use; {fix}"
        )
    return None


def check_agents(registry: AgentRegistry, env: Mapping[str, str]) -> list[str]:
    """Problems with the registry's HTTP agents that can be found without the network."""
    problems: list[str] = []
    for agent in registry:
        if agent.backend is not AgentBackend.HTTP:
            continue
        if (problem := _url_problem(agent)) is not None:
            problems.append(problem)
        if agent.auth_token_env is not None and not env.get(agent.auth_token_env, "").strip():
            problems.append(
                f"agent {agent.id!r}: field 'auth_token_env' names {agent.auth_token_env}, which "
                f"is not set (or empty) in the environment; set {agent.auth_token_env} to the "
                "platform's bearer token, or remove auth_token_env if it needs none"
            )
    return problems


async def probe_agents(
    registry: AgentRegistry,
    *,
    env: Mapping[str, str] | None = None,
    request_timeout: float = DEFAULT_PROBE_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[str]:
    """Ask every HTTP agent's `GET /v1/health`, concurrently; problems in registry order."""
    agents = [a for a in registry if a.backend is AgentBackend.HTTP and _url_problem(a) is None]
    found: dict[str, str] = {}

    async def probe(agent: AgentEntry) -> None:
        probe_agent = agent.model_copy(
            update={"timeout_seconds": min(agent.timeout_seconds, request_timeout)}
        )
        async with HttpPlatform(
            probe_agent,
            env=os.environ if env is None else env,
            transport=transport,
            retry=RetryPolicy(attempts=1),
            connect_timeout=request_timeout,
        ) as client:
            try:
                health = await client.health()
            except PlatformError as exc:
                found[agent.id] = (
                    f"agent {agent.id!r}, field 'url': health check failed: {exc} "
                    "Start the platform, or fix the url in the registry."
                )
                return
        if not health.ok:
            found[agent.id] = (
                f"agent {agent.id!r}: the platform at field 'url' ({agent.url}) answers but "
                f"reports a problem: {health.detail or 'not ok'}"
            )

    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(probe, agent)
    return [found[a.id] for a in agents if a.id in found]
