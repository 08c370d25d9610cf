"""The compose files in deploy/ keep the Compose specification and our deploy contract.

No Docker engine needed. `docker compose config` runs where the CLI and its Compose
plugin exist; elsewhere that test skips, unless SURFACE_REQUIRE_E2E=1 (CI) makes a
missing CLI a failure.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from contracts.deploy import (
    check_fullstack,
    check_prod,
    env_example_variables,
    interpolated_variables,
    load_compose_text,
    parse_service,
    resolve_service,
)
from contracts.registry import AgentBackend, AgentRegistryFile
from runtime.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROD = DEPLOY / "docker-compose.prod.yml"
FULLSTACK = DEPLOY / "docker-compose.fullstack.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILES = ("Dockerfile", "platform-agent.Dockerfile", "synapse.Dockerfile")

SETTINGS_VARS = frozenset(name.upper() for name in Settings.model_fields)


def load(path: Path) -> dict[str, Any]:
    return load_compose_text(path.read_text())


@pytest.fixture
def prod() -> dict[str, Any]:
    return load(PROD)


@pytest.fixture
def fullstack() -> dict[str, Any]:
    return load(FULLSTACK)


@pytest.fixture
def env_example_vars() -> set[str]:
    return env_example_variables(ENV_EXAMPLE.read_text())


@pytest.fixture(scope="module")
def compose_schema_validator() -> jsonschema.protocols.Validator:
    # The official Compose specification schema, as vendored (with its licence and a
    # checksum) by check-jsonschema, a maintained PyPI package; not a hand copy.
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# --- the Compose specification ------------------------------------------------------------


@pytest.mark.parametrize("path", [PROD, FULLSTACK], ids=lambda p: p.name)
def test_compose_file_matches_the_official_compose_schema(
    path: Path, compose_schema_validator: jsonschema.protocols.Validator
) -> None:
    assert schema_errors(compose_schema_validator, load(path)) == []


def test_compose_schema_rejects_a_misspelt_key(
    prod: dict[str, Any], compose_schema_validator: jsonschema.protocols.Validator
) -> None:
    prod["services"]["bot"]["healthcheck"]["intervall"] = "1s"

    errors = schema_errors(compose_schema_validator, prod)

    assert any("intervall" in error for error in errors)


# --- our contract: the files as committed -------------------------------------------------


def test_prod_keeps_the_deploy_contract(prod: dict[str, Any], env_example_vars: set[str]) -> None:
    assert check_prod(prod, env_example_vars, SETTINGS_VARS) == []


def test_fullstack_keeps_the_deploy_contract(
    fullstack: dict[str, Any], prod: dict[str, Any]
) -> None:
    assert check_fullstack(fullstack, {PROD.name: prod}) == []


def test_env_example_documents_every_setting_of_the_bot(env_example_vars: set[str]) -> None:
    assert len(SETTINGS_VARS) > 10  # derived from the Settings class, not a copy
    assert sorted(SETTINGS_VARS - env_example_vars) == []


def test_env_example_documents_every_variable_the_prod_file_interpolates(
    prod: dict[str, Any], env_example_vars: set[str]
) -> None:
    assert interpolated_variables(prod) >= {"SURFACE_IMAGE", "SURFACE_HTTP_PORT"}
    assert sorted(interpolated_variables(prod) - env_example_vars) == []


def test_fullstack_bot_env_sets_only_real_settings() -> None:
    names = env_example_variables((DEPLOY / "fullstack" / "bot.env").read_text())

    assert names <= SETTINGS_VARS, f"typos or unknown settings: {sorted(names - SETTINGS_VARS)}"
    assert {"MATRIX_HOMESERVER", "MATRIX_USER_ID", "MATRIX_PASSWORD"} <= names


def test_fullstack_agent_registry_points_at_the_platform_service(
    fullstack: dict[str, Any],
) -> None:
    registry = AgentRegistryFile.model_validate(
        yaml.safe_load((DEPLOY / "fullstack" / "agents.yaml").read_text())
    )
    platform = parse_service("platform-agent", fullstack["services"]["platform-agent"])
    port = platform.environment["PLATFORM_AGENT_PORT"]

    (agent,) = registry.agents
    assert agent.backend is AgentBackend.HTTP
    assert agent.url == f"http://platform-agent:{port}"


def test_fullstack_bot_inherits_volumes_and_readiness_check_from_prod(
    fullstack: dict[str, Any], prod: dict[str, Any]
) -> None:
    bot = parse_service(
        "bot", resolve_service("bot", fullstack["services"]["bot"], {PROD.name: prod})
    )
    prod_bot = parse_service("bot", prod["services"]["bot"])

    assert set(prod_bot.volumes) <= set(bot.volumes)
    assert bot.healthcheck == prod_bot.healthcheck
    assert bot.env_files == ("fullstack/bot.env",)  # `!override` drops the operator's .env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_takes_a_base_image_installs_from_the_lock_and_drops_root(name: str) -> None:
    text = (DEPLOY / name).read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]

    assert "ARG BASE_IMAGE=python:3." in text
    assert "uv sync --frozen" in text
    users = [line.split()[1] for line in final_stage.splitlines() if line.startswith("USER ")]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in final_stage


# --- our contract: each rule bites ---------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _drop_volume(target: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        bot = doc["services"]["bot"]
        bot["volumes"] = [v for v in bot["volumes"] if v["target"] != target]

    return mutate


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[str, ...]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


PROD_VIOLATIONS: list[Any] = [
    pytest.param(_drop_volume("/data/db"), "MATRIX_DB_PATH", id="database-not-on-volume"),
    pytest.param(_drop_volume("/data/store"), "MATRIX_STORE_PATH", id="store-not-on-volume"),
    pytest.param(_drop_volume("/workspace"), "SURFACE_WORKSPACE_DIR", id="workspace-not-on-volume"),
    pytest.param(
        _set(("volumes", "workspace"), None),
        "${SURFACE_WORKSPACE_VOLUME}",
        id="workspace-private-to-the-project",
    ),
    pytest.param(
        _delete(("volumes", "workspace", "external")),
        "${SURFACE_WORKSPACE_EXTERNAL}",
        id="workspace-external-not-a-choice",
    ),
    pytest.param(
        _set(("services", "bot", "volumes", 0), {"type": "volume", "target": "/data/db"}),
        "anonymous volume",
        id="database-on-anonymous-volume",
    ),
    pytest.param(
        _set(
            ("services", "bot", "volumes", 0),
            {"type": "volume", "source": "undeclared", "target": "/data/db"},
        ),
        "'undeclared'",
        id="volume-not-declared",
    ),
    pytest.param(
        _set(("services", "bot", "environment", "MATRIX_DB_PATH"), "/tmp/lambda.db"),
        "MATRIX_DB_PATH (/tmp)",
        id="database-moved-off-volume",
    ),
    pytest.param(
        _delete(("services", "bot", "environment", "MATRIX_STORE_PATH")),
        "MATRIX_STORE_PATH",
        id="store-path-not-visible",
    ),
    pytest.param(
        _delete(("services", "bot", "healthcheck")), "no healthcheck", id="no-healthcheck"
    ),
    pytest.param(
        _set(("services", "bot", "healthcheck", "disable"), True),
        "no healthcheck",
        id="healthcheck-disabled",
    ),
    pytest.param(
        _set(("services", "bot", "healthcheck", "test"), ["CMD", "true"]),
        "/ready",
        id="healthcheck-not-on-ready",
    ),
    pytest.param(_delete(("services", "bot", "restart")), "restart policy", id="no-restart"),
    pytest.param(_delete(("services", "bot", "env_file")), "env_file", id="no-env-file"),
    pytest.param(
        _set(("services", "synapse"), {"image": "matrixdotorg/synapse"}),
        "synapse",
        id="homeserver-in-prod",
    ),
    pytest.param(
        _set(("services", "bot", "environment", "MATRIX_PASSWORD"), "hunter2"),
        "MATRIX_PASSWORD",
        id="inline-password",
    ),
    pytest.param(
        _set(("services", "bot", "environment", "MATRIX_ACCESS_TOKEN"), "syt_abc"),
        "MATRIX_ACCESS_TOKEN",
        id="inline-token",
    ),
    pytest.param(
        _set(("services", "bot", "ports"), ["8080:8080"]),
        "every interface",
        id="port-on-every-interface",
    ),
    pytest.param(
        _set(("services", "bot", "image"), "${SURFACE_UNDOCUMENTED_TAG}"),
        "SURFACE_UNDOCUMENTED_TAG",
        id="undocumented-variable",
    ),
]


@pytest.mark.parametrize(("mutate", "named"), PROD_VIOLATIONS)
def test_prod_contract_names_the_violation(
    prod: dict[str, Any], env_example_vars: set[str], mutate: Mutation, named: str
) -> None:
    mutate(prod)

    problems = check_prod(prod, env_example_vars, SETTINGS_VARS)

    assert any(named in problem for problem in problems), problems


def test_prod_contract_allows_an_interpolated_secret(
    prod: dict[str, Any], env_example_vars: set[str]
) -> None:
    prod["services"]["bot"]["environment"]["MATRIX_PASSWORD"] = "${MATRIX_PASSWORD:?set it}"

    problems = check_prod(prod, env_example_vars, SETTINGS_VARS)

    assert not any("inline" in problem for problem in problems), problems


def test_prod_contract_names_an_undocumented_setting(
    prod: dict[str, Any], env_example_vars: set[str]
) -> None:
    problems = check_prod(prod, env_example_vars, SETTINGS_VARS | {"SURFACE_NEW_KNOB"})

    assert any("SURFACE_NEW_KNOB" in problem for problem in problems), problems


FULLSTACK_VIOLATIONS: list[Any] = [
    pytest.param(
        _set(("services", "bot", "depends_on"), ["synapse", "platform-agent"]),
        "short depends_on",
        id="short-depends-on",
    ),
    pytest.param(
        _set(("services", "bot", "depends_on", "synapse", "condition"), "service_started"),
        "service_started",
        id="started-not-healthy",
    ),
    pytest.param(
        _delete(("services", "bot", "depends_on", "platform-agent")),
        "'platform-agent'",
        id="bot-not-gated-on-platform",
    ),
    pytest.param(
        _delete(("services", "synapse", "healthcheck")),
        "'synapse' has no healthcheck",
        id="synapse-without-healthcheck",
    ),
    pytest.param(
        _delete(("services", "platform-agent", "healthcheck")),
        "'platform-agent' has no healthcheck",
        id="platform-without-healthcheck",
    ),
    pytest.param(
        _set(("services", "platform-agent", "volumes", 1, "target"), "/srv/workspace"),
        "same in-container path",
        id="workspace-at-another-path",
    ),
    pytest.param(
        _set(("services", "platform-agent", "volumes"), []),
        "not mounted in 'platform-agent'",
        id="workspace-not-shared",
    ),
    pytest.param(
        _set(("services", "platform-agent", "environment", "PLATFORM_AGENT_WORKSPACE"), "/w"),
        "PLATFORM_AGENT_WORKSPACE",
        id="platform-workspace-setting-differs",
    ),
    pytest.param(
        _set(("services", "synapse", "ports"), ["8008:8008"]),
        "every interface",
        id="synapse-on-every-interface",
    ),
    pytest.param(
        _set(("services", "bot", "volumes"), [{"type": "volume", "target": "/data/db"}]),
        "anonymous volume",
        id="bot-db-on-anonymous-volume",
    ),
    pytest.param(
        _delete(("services", "bot", "extends")),
        "must extend the prod bot service",
        id="bot-not-extending-prod",
    ),
    pytest.param(
        _set(("services", "register", "command"), ["sh", "-c", "sleep 10 && register"]),
        "sleeps",
        id="sleep-instead-of-health",
    ),
    pytest.param(
        _set(("services", "platform-agent", "environment", "PLATFORM_AGENT_TOKEN"), "abc"),
        "PLATFORM_AGENT_TOKEN",
        id="inline-platform-token",
    ),
    pytest.param(_delete(("services", "synapse")), "missing services synapse", id="no-synapse"),
]


@pytest.mark.parametrize(("mutate", "named"), FULLSTACK_VIOLATIONS)
def test_fullstack_contract_names_the_violation(
    fullstack: dict[str, Any], prod: dict[str, Any], mutate: Mutation, named: str
) -> None:
    mutate(fullstack)

    problems = check_fullstack(fullstack, {PROD.name: prod})

    assert any(named in problem for problem in problems), problems


def test_fullstack_contract_sees_volumes_removed_from_the_extended_prod_service(
    fullstack: dict[str, Any], prod: dict[str, Any]
) -> None:
    _drop_volume("/data/store")(prod)

    problems = check_fullstack(fullstack, {PROD.name: prod})

    assert any("MATRIX_STORE_PATH" in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("short", "host_ip", "published", "target"),
    [
        ("127.0.0.1:8080:80", "127.0.0.1", "8080", "80"),
        ("127.0.0.1::80", "127.0.0.1", None, "80"),
        ("[::1]:8080:80", "::1", "8080", "80"),
        ("8080:80/tcp", None, "8080", "80"),
        ("80", None, None, "80"),
    ],
)
def test_short_port_syntax_is_read_like_compose(
    short: str, host_ip: str | None, published: str | None, target: str
) -> None:
    (port,) = parse_service("s", {"ports": [short]}).ports

    assert (port.host_ip, port.published, str(port.target)) == (host_ip, published, target)


def test_short_volume_syntax_is_read_like_compose() -> None:
    service = parse_service("s", {"volumes": ["db:/data/db", "./conf:/etc/x:ro", "/scratch"]})

    named, bind, anonymous = service.volumes
    assert (named.type, named.source, named.target) == ("volume", "db", "/data/db")
    assert (bind.type, bind.read_only) == ("bind", True)
    assert (anonymous.source, anonymous.target) == (None, "/scratch")


# --- the real Compose CLI -----------------------------------------------------------------


def _compose_cli() -> list[str]:
    reason = ""
    if shutil.which("docker") is None:
        reason = "the docker CLI is not installed"
    else:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            reason = "the Compose plugin is missing (`deploy/docker-engine.sh start` installs it)"
    if reason:
        if os.environ.get("SURFACE_REQUIRE_E2E") == "1":
            pytest.fail(f"SURFACE_REQUIRE_E2E=1 but {reason}")
        pytest.skip(reason)
    return ["docker", "compose"]


def _compose_config(cli: list[str], path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # `config` needs no engine; keep the caller's environment from leaking into the
    # interpolation of the files under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SURFACE_", "MATRIX_"))}
    return subprocess.run(
        [*cli, "-f", str(path), "config", *extra],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_docker_compose_accepts_prod_with_the_example_env(tmp_path: Path) -> None:
    cli = _compose_cli()
    shutil.copy(PROD, tmp_path / PROD.name)
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")

    result = _compose_config(cli, tmp_path / PROD.name, "-q")

    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_prod_without_env_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    shutil.copy(PROD, tmp_path / PROD.name)

    result = _compose_config(cli, tmp_path / PROD.name, "-q")

    assert result.returncode != 0
    assert ".env" in result.stderr


def test_docker_compose_accepts_fullstack_and_resolves_extends_like_our_contract(
    fullstack: dict[str, Any], prod: dict[str, Any]
) -> None:
    cli = _compose_cli()

    result = _compose_config(cli, FULLSTACK, "--format", "json")

    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]["bot"]
    ours = parse_service(
        "bot",
        resolve_service("bot", copy.deepcopy(fullstack["services"]["bot"]), {PROD.name: prod}),
    )
    theirs = parse_service("bot", resolved)
    mounts = {(m.type, m.target) for m in theirs.volumes}
    assert mounts == {(m.type, m.target) for m in ours.volumes}
    assert theirs.healthcheck == ours.healthcheck
    assert theirs.depends_on == ours.depends_on
