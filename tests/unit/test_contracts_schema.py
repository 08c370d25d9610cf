"""contracts/: every model exports a valid JSON Schema its own data satisfies; layering holds.

Models are discovered, not listed, so a new model without a sample fails
`test_every_contract_model_has_a_sample` until one is added to SAMPLES.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter

import contracts
from contracts.platform import PlatformEvent

ROOT = Path(__file__).resolve().parents[2]

# Input for one instance of every public model in contracts/, keyed by qualified name.
# Where a field is optional, the sample sets it, so its schema is exercised too.
SAMPLES: dict[str, dict[str, Any]] = {
    "contracts.state.UserRecord": {
        "matrix_user_id": "@alice:example.org",
        "space_id": "!space:example.org",
        "next_chat_index": 3,
        "selected_agent_id": "echo",
    },
    "contracts.state.RoomRecord": {
        "room_id": "!r:example.org",
        "room_type": "chat",
        "matrix_user_id": "@alice:example.org",
        "space_id": "!space:example.org",
        "chat_id": "C2",
        "display_name": "Plans",
        "agent_id": "echo",
        "platform_chat_id": "17",
        "archived": True,
    },
    "contracts.state.ChatRecord": {
        "matrix_user_id": "@alice:example.org",
        "chat_id": "C2",
        "room_id": "!r:example.org",
        "display_name": "Plans",
        "archived": False,
    },
    "contracts.markers.SpaceMarker": {
        "owner": "@alice:example.org",
        "selected_agent_id": "helper",
    },
    "contracts.markers.RoomMarker": {
        "owner": "@alice:example.org",
        "space_id": "!space:example.org",
        "chat_id": "C1",
        "display_name": "First",
        "agent_id": "echo",
        "platform_chat_id": "4",
        "archived": False,
    },
    "contracts.markers.SequenceHighWater": {"reserved_through": 1000},
    "contracts.registry.AgentEntry": {
        "id": "helper",
        "name": "Helper",
        "description": "Answers questions.",
        "backend": "http",
        "url": "http://platform-agent:8090",
        "auth_token_env": "HELPER_TOKEN",
        "default": True,
        "timeout_seconds": 30.5,
    },
    "contracts.registry.AgentRegistryFile": {
        "agents": [
            {"id": "echo", "name": "Echo"},
            {"id": "helper", "name": "Helper", "backend": "http", "url": "https://h.example"},
        ]
    },
    "contracts.store.LedgerEntry": {
        "event_id": "$ev:example.org",
        "room_id": "!r:example.org",
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "hi", "m.relates_to": {"x": [1, None]}},
        "origin_server_ts": 1_700_000_000_000,
        "state_key": None,
        "status": "done",
    },
    "contracts.store.SequenceState": {"next_value": 5, "reserved_through": 100},
    "contracts.platform.TextDelta": {"text": "Hel"},
    "contracts.platform.EmittedFile": {"path": "out/report.pdf", "mimetype": "application/pdf"},
    "contracts.platform.StatusUpdate": {"status": "thinking"},
    "contracts.platform.TurnDone": {"text": "Hello"},
    "contracts.platform.TurnFailed": {"code": "agent_error", "message": "The agent crashed."},
    "contracts.platform.UserTurn": {
        "agent_id": "echo",
        "platform_chat_id": "4",
        "text": "hello",
        "attachments": ["in/photo.png"],
        "idempotency_key": "$ev:example.org",
        "sender": "@alice:example.org",
        "thread_id": "$root:example.org",
        "quoted": {"event_id": "$q:example.org", "sender": "@bot:example.org", "text": "earlier"},
    },
    "contracts.platform.QuotedMessage": {
        "event_id": "$q:example.org",
        "sender": "@alice:example.org",
        "text": "what was said",
    },
    "contracts.platform.Snapshot": {
        "snapshot_id": "s1",
        "name": "before refactor",
        "created_at": "2024-05-01T12:00:00Z",
        "turns": 12,
    },
    "contracts.platform.ContextInfo": {
        "agent_id": "echo",
        "platform_chat_id": "4",
        "turns": 3,
        "snapshots": 1,
        "details": {"model": "tiny"},
    },
    "contracts.platform.PlatformHealth": {"ok": True, "version": "1.2.3", "detail": None},
    "contracts.wire.TurnRequest": {
        "agent_id": "echo",
        "platform_chat_id": "4",
        "text": "hello",
        "attachments": ["in/photo.png"],
        "idempotency_key": "$ev:example.org",
        "sender": "@alice:example.org",
    },
    "contracts.wire.DisconnectRequest": {"agent_id": "echo", "platform_chat_id": "4"},
    "contracts.wire.DisconnectResponse": {"disconnected": True},
    "contracts.wire.SaveSnapshotRequest": {
        "agent_id": "echo",
        "platform_chat_id": "4",
        "owner": "@alice:example.org",
        "name": "checkpoint",
    },
    "contracts.wire.ListSnapshotsRequest": {"agent_id": "echo", "owner": "@alice:example.org"},
    "contracts.wire.ListSnapshotsResponse": {
        "snapshots": [{"snapshot_id": "s1", "name": "n", "created_at": "2024-05-01T12:00:00Z"}]
    },
    "contracts.wire.LoadSnapshotRequest": {
        "agent_id": "echo",
        "platform_chat_id": "4",
        "owner": "@alice:example.org",
        "snapshot_id": "s1",
    },
    "contracts.wire.ContextRequest": {"agent_id": "echo", "platform_chat_id": "4"},
    "contracts.wire.HealthResponse": {
        "ok": True,
        "wire_version": "1",
        "service": "platform-agent 0.1",
        "detail": "warm",
    },
    "contracts.wire.ErrorResponse": {"code": "bad_request", "message": "Send a text."},
    "contracts.deploy.DurablePath": {"setting": "MATRIX_DB_PATH", "kind": "file"},
    "contracts.deploy.DeployContract": {
        "bot_service": "bot",
        "homeserver_service": "synapse",
        "platform_service": "platform-agent",
        "durable_paths": [{"setting": "MATRIX_STORE_PATH", "kind": "directory"}],
        "workspace_setting": "SURFACE_WORKSPACE_DIR",
        "platform_workspace_setting": "PLATFORM_AGENT_WORKSPACE",
        "secret_settings": ["MATRIX_PASSWORD"],
        "readiness_path": "/ready",
        "prod_env_file": ".env",
        "prod_file_name": "docker-compose.prod.yml",
    },
    "contracts.deploy.VolumeMount": {
        "type": "volume",
        "target": "/data/db",
        "source": "bot-db",
        "read_only": True,
    },
    "contracts.deploy.PortBinding": {"target": 8080, "host_ip": "127.0.0.1", "published": "8080"},
    "contracts.deploy.Healthcheck": {"test": ["CMD", "true"], "disable": False},
    "contracts.deploy.DependsOn": {"condition": "service_healthy"},
    "contracts.deploy.Service": {
        "name": "bot",
        "image": "lambda-surface/bot:local",
        "restart": "unless-stopped",
        "environment": {"MATRIX_DB_PATH": "/data/db/lambda_matrix.db", "PASSTHROUGH": None},
        "env_files": [".env"],
        "volumes": [{"type": "volume", "target": "/data/db", "source": "bot-db"}],
        "ports": [{"target": 8080, "host_ip": "127.0.0.1"}],
        "healthcheck": {"test": ["CMD", "true"]},
        "depends_on": {"synapse": {"condition": "service_healthy"}},
        "depends_on_short_form": False,
        "command": ["surface", "run"],
        "extends": {"file": "docker-compose.prod.yml", "service": "bot"},
    },
}


def _contract_models() -> dict[str, type[BaseModel]]:
    """Every public pydantic model defined in a module of contracts/."""
    found: dict[str, type[BaseModel]] = {}
    for info in pkgutil.iter_modules(contracts.__path__, prefix="contracts."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


MODELS = _contract_models()
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def _assert_valid_schema(schema: dict[str, Any]) -> None:
    errors = [e.message for e in _META.iter_errors(schema)]
    assert errors == []


def test_discovery_finds_the_core_models() -> None:
    expected = {
        "contracts.state.UserRecord",
        "contracts.markers.RoomMarker",
        "contracts.registry.AgentEntry",
        "contracts.store.LedgerEntry",
        "contracts.platform.UserTurn",
        "contracts.platform.TurnFailed",
    }

    assert expected <= MODELS.keys()


def test_every_contract_model_has_a_sample() -> None:
    assert sorted(MODELS.keys() - SAMPLES.keys()) == [], "add a sample to SAMPLES"
    assert sorted(SAMPLES.keys() - MODELS.keys()) == [], "remove stale samples"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_json_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = MODELS[name].model_json_schema()

    _assert_valid_schema(schema)


@pytest.mark.parametrize("name", sorted(SAMPLES.keys() & MODELS.keys()))
def test_sample_round_trips_through_json_and_matches_its_schema(name: str) -> None:
    model = MODELS[name]
    instance = model.model_validate(SAMPLES[name])

    dumped = instance.model_dump(mode="json")

    Draft202012Validator(model.model_json_schema()).validate(dumped)
    assert model.model_validate(dumped) == instance


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_rejects_an_unrelated_document(name: str) -> None:
    # Guards the round-trip test: a schema that accepts anything proves nothing.
    validator = Draft202012Validator(MODELS[name].model_json_schema())

    assert not validator.is_valid("not an object")


def test_platform_event_union_schema_accepts_every_event() -> None:
    adapter: TypeAdapter[PlatformEvent] = TypeAdapter(PlatformEvent)
    schema = adapter.json_schema()
    _assert_valid_schema(schema)
    validator = Draft202012Validator(schema)
    events = [
        "contracts.platform.TextDelta",
        "contracts.platform.EmittedFile",
        "contracts.platform.StatusUpdate",
        "contracts.platform.TurnDone",
        "contracts.platform.TurnFailed",
    ]

    for name in events:
        dumped = MODELS[name].model_validate(SAMPLES[name]).model_dump(mode="json")
        validator.validate(dumped)
        assert adapter.validate_python(dumped) == MODELS[name].model_validate(dumped)

    assert not validator.is_valid({"type": "no_such_event"})


# -- layering ----------------------------------------------------------------------------------


def _imported_modules(source: str, module: str, *, is_package: bool) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved)."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def _layer_violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        is_package = relative.name == "__init__"
        parts = relative.parts[:-1] if is_package else relative.parts
        module = ".".join(parts)
        imported = _imported_modules(
            path.read_text(encoding="utf-8"), module, is_package=is_package
        )
        for name in sorted(imported):
            if name.split(".")[0] in forbidden:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    return violations


def test_import_scanner_sees_absolute_relative_and_nested_imports() -> None:
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import runtime.store\n"
        "from .. import tasks\n"
        "from ..platform_agent.app import make\n"
        "def f():\n"
        "    from . import sibling\n"
    )

    names = _imported_modules(source, "contracts.inner.mod", is_package=False)

    # A relative import stays inside its top-level package, whatever it is called.
    assert names == {
        "os",
        "typing",
        "typing.TYPE_CHECKING",
        "runtime.store",
        "contracts",
        "contracts.tasks",
        "contracts.platform_agent.app",
        "contracts.platform_agent.app.make",
        "contracts.inner",
        "contracts.inner.sibling",
    }


def test_contracts_import_nothing_of_runtime_tasks_or_platform_agent() -> None:
    assert _layer_violations("contracts", ("runtime", "tasks", "platform_agent")) == []


def test_tasks_do_not_import_runtime() -> None:
    assert _layer_violations("tasks", ("runtime",)) == []


def test_only_the_nio_adapter_and_its_crypto_side_import_nio() -> None:
    violations = [
        line
        for package in ("contracts", "tasks", "runtime")
        for line in _layer_violations(package, ("nio",))
    ]

    # The bot: only the adapter. The dev tooling's test user is a nio client too.
    assert sorted(violations) == [
        "runtime/dev/user.py imports nio",
        "runtime/matrix/e2ee.py imports nio",
        "runtime/matrix/nio_adapter.py imports nio",
    ]


def test_benchmarks_import_nothing_from_tests() -> None:
    # What the benchmarks share with the e2e tests lives in runtime/dev/.
    assert _layer_violations("benchmarks", ("tests",)) == []


def test_dev_tooling_imports_nothing_of_ours_outside_itself() -> None:
    # The Synapse image runs runtime/dev from its entrypoint and register job.
    ours = ("contracts", "tasks", "runtime", "platform_agent")
    violations = [
        found
        for found in _layer_violations("runtime/dev", ours)
        if not found.split(" imports ")[1].startswith("runtime.dev")
    ]

    assert violations == []


def test_surface_run_with_a_homeserver_does_not_import_the_dev_tooling() -> None:
    # The CLI imports runtime.dev lazily, only for the embedded default and dev-homeserver.
    script = (
        "import sys, runtime.cli, runtime.app\n"
        "print(sorted(m for m in sys.modules if m.startswith('runtime.dev')))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert result.stdout.strip() == "[]"


def test_no_two_test_files_share_a_name() -> None:
    # `just test` collects tests/unit and tests/e2e in one run, without packages:
    # two test modules of one basename make the whole collection fail.
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]

    assert sorted({n for n in names if names.count(n) > 1}) == []
