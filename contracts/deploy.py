"""The deploy contract: what the two compose files in deploy/ promise.

``docker-compose.prod.yml`` is the operator's handoff: the bot alone, its settings in
``.env``, every durable path on a named volume, a healthcheck on ``/ready``, a restart
policy, no secret in the file, ports on loopback only. ``docker-compose.fullstack.yml``
is the internal end-to-end stack: the same bot service (through ``extends``), Synapse and
the platform-agent, started in order behind ``service_healthy`` gates, the workspace
volume shared by the bot and the platform-agent at the same path.

Everything here is pure: callers read the files (:func:`load_compose_text` parses the
text, keeping Compose's ``!override`` / ``!reset`` merge tags) and pass dicts in. Each
check returns a list of violations, one sentence each naming the service and the field;
an empty list means the file keeps the contract.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_CONTRACT",
    "DependsOn",
    "DeployContract",
    "DurablePath",
    "Healthcheck",
    "PathKind",
    "PortBinding",
    "Service",
    "VolumeMount",
    "check_fullstack",
    "check_prod",
    "env_example_variables",
    "interpolated_variables",
    "load_compose_text",
    "parse_service",
    "resolve_service",
]

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "[::1]"})
_SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY|PRIVATE_KEY)$")
# `${NAME}`, `${NAME:-default}`, `$NAME`; `$$` is an escaped dollar, not a variable.
_INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
_PURE_INTERPOLATION = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}?$")
_ENV_EXAMPLE_LINE = re.compile(r"^\s*#?\s*([A-Za-z_][A-Za-z0-9_]*)=")


# --- the contract --------------------------------------------------------------------------


class PathKind(StrEnum):
    FILE = "file"  # the file's directory must be on a volume (SQLite also writes -wal/-shm)
    DIRECTORY = "directory"


class DurablePath(BaseModel):
    """A setting naming a path the bot must keep across container re-creation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    setting: str
    kind: PathKind


class DeployContract(BaseModel):
    """Names and rules the checks apply; the defaults are lambda-surface's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bot_service: str = "bot"
    homeserver_service: str = "synapse"
    platform_service: str = "platform-agent"
    durable_paths: tuple[DurablePath, ...] = (
        DurablePath(setting="MATRIX_DB_PATH", kind=PathKind.FILE),
        DurablePath(setting="MATRIX_STORE_PATH", kind=PathKind.DIRECTORY),
        DurablePath(setting="SURFACE_WORKSPACE_DIR", kind=PathKind.DIRECTORY),
    )
    workspace_setting: str = "SURFACE_WORKSPACE_DIR"
    platform_workspace_setting: str = "PLATFORM_AGENT_WORKSPACE"
    # prod: the operator names the workspace volume (shared with their agent platform)
    # and says whether it already exists; both in .env.
    workspace_volume_variable: str = "SURFACE_WORKSPACE_VOLUME"
    workspace_external_variable: str = "SURFACE_WORKSPACE_EXTERNAL"
    secret_settings: frozenset[str] = frozenset({"MATRIX_PASSWORD", "MATRIX_ACCESS_TOKEN"})
    readiness_path: str = "/ready"
    prod_env_file: str = ".env"
    prod_file_name: str = "docker-compose.prod.yml"


DEFAULT_CONTRACT: Final = DeployContract()


# --- a normalized view of a compose service ------------------------------------------------


class VolumeMount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    target: str
    source: str | None = None
    read_only: bool = False


class PortBinding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: int | str
    host_ip: str | None = None
    published: str | None = None


class Healthcheck(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    test: tuple[str, ...] = ()
    disable: bool = False

    @property
    def active(self) -> bool:
        return bool(self.test) and not self.disable and self.test[0] != "NONE"


class DependsOn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    condition: str = "service_started"


class Service(BaseModel):
    """One service after short syntaxes are expanded (what the checks read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    image: str | None = None
    restart: str | None = None
    environment: dict[str, str | None] = Field(default_factory=dict)
    env_files: tuple[str, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    healthcheck: Healthcheck | None = None
    depends_on: dict[str, DependsOn] = Field(default_factory=dict)
    depends_on_short_form: bool = False
    command: tuple[str, ...] = ()
    extends: dict[str, str] | None = None


# --- reading compose documents -------------------------------------------------------------


class _Override(list[Any]):
    """A sequence tagged `!override` (or `!reset`): replaces, never merges with, the base."""


class _OverrideMap(dict[str, Any]):
    """A mapping tagged `!override` (or `!reset`)."""


class _ComposeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that understands Compose's merge tags instead of failing on them."""


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return _OverrideMap(
            {str(k): v for k, v in loader.construct_mapping(node, deep=True).items()}
        )
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return _OverrideMap()
    if isinstance(node, yaml.SequenceNode):
        return _Override()
    return None


_ComposeLoader.add_constructor("!override", _construct_override)
_ComposeLoader.add_constructor("!reset", _construct_reset)


def load_compose_text(text: str) -> dict[str, Any]:
    """Parse a compose file's text; `!override`/`!reset` values stay list/dict subclasses.

    Raises yaml.YAMLError on invalid YAML and TypeError if the top level is not a mapping.
    """
    # A SafeLoader subclass: no arbitrary Python objects, only the two Compose tags added.
    document = yaml.load(text, Loader=_ComposeLoader)
    if not isinstance(document, dict):
        raise TypeError("a compose file must be a mapping at the top level")
    return document


def env_example_variables(text: str) -> set[str]:
    """Variable names an env example documents: `NAME=...` lines, commented out or not."""
    return {m.group(1) for line in text.splitlines() if (m := _ENV_EXAMPLE_LINE.match(line))}


def interpolated_variables(document: Any) -> set[str]:
    """Names of the `${VAR}` / `$VAR` interpolations anywhere in a compose document."""
    return {a or b for text in _strings(document) for a, b in _INTERPOLATION.findall(text)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _environment(raw: Any) -> dict[str, str | None]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): None if v is None else str(v) for k, v in raw.items()}
    env: dict[str, str | None] = {}
    for item in raw:
        name, sep, value = str(item).partition("=")
        env[name] = value if sep else None
    return env


def _volume(raw: Any) -> VolumeMount:
    if isinstance(raw, Mapping):
        return VolumeMount(
            type=str(raw.get("type", "volume")),
            target=str(raw["target"]),
            source=None if raw.get("source") is None else str(raw["source"]),
            read_only=bool(raw.get("read_only", False)),
        )
    parts = str(raw).split(":")
    if len(parts) == 1:
        return VolumeMount(type="volume", target=parts[0])
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else ""
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return VolumeMount(type=kind, source=source, target=target, read_only="ro" in mode.split(","))


def _port(raw: Any) -> PortBinding:
    if isinstance(raw, Mapping):
        published = raw.get("published")
        return PortBinding(
            target=raw["target"],
            host_ip=raw.get("host_ip"),
            published=None if published is None else str(published),
        )
    spec = str(raw).split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8080:80
        host, _, rest = spec[1:].partition("]:")
        published, _, target = rest.rpartition(":")
        return PortBinding(target=target, host_ip=host, published=published or None)
    parts = spec.split(":")
    if len(parts) == 1:
        return PortBinding(target=parts[0])  # every interface, a random port
    if len(parts) == 2:
        return PortBinding(target=parts[1], published=parts[0])  # every interface
    return PortBinding(target=parts[-1], published=parts[-2] or None, host_ip=":".join(parts[:-2]))


def _healthcheck(raw: Any) -> Healthcheck | None:
    if raw is None:
        return None
    test = raw.get("test", ())
    if isinstance(test, str):
        test = ("CMD-SHELL", test)
    return Healthcheck(test=tuple(str(t) for t in test), disable=bool(raw.get("disable", False)))


def _depends_on(raw: Any) -> dict[str, DependsOn]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {
            str(name): DependsOn(condition=str((spec or {}).get("condition", "service_started")))
            for name, spec in raw.items()
        }
    return {str(name): DependsOn() for name in raw}


def _command(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    return (str(raw),) if isinstance(raw, str) else tuple(str(part) for part in raw)


def _env_files(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str | Mapping) else list(raw)
    return tuple(str(i["path"]) if isinstance(i, Mapping) else str(i) for i in items)


def parse_service(name: str, raw: Mapping[str, Any]) -> Service:
    """Expand a raw service mapping's short syntaxes into a :class:`Service`."""
    return Service(
        name=name,
        image=raw.get("image"),
        restart=None if raw.get("restart") is None else str(raw.get("restart")),
        environment=_environment(raw.get("environment")),
        env_files=_env_files(raw.get("env_file")),
        volumes=tuple(_volume(v) for v in raw.get("volumes") or ()),
        ports=tuple(_port(p) for p in raw.get("ports") or ()),
        healthcheck=_healthcheck(raw.get("healthcheck")),
        depends_on=_depends_on(raw.get("depends_on")),
        depends_on_short_form=isinstance(raw.get("depends_on"), list),
        command=_command(raw.get("entrypoint")) + _command(raw.get("command")),
        extends=dict(raw["extends"]) if isinstance(raw.get("extends"), Mapping) else None,
    )


# --- `extends` -----------------------------------------------------------------------------

# How Compose merges a service onto the one it extends (compose-spec "merge" rules):
# mappings merge key by key, volumes merge by target path, these sequences are appended,
# and everything else (scalars, command, healthcheck.test, ...) is replaced.
_APPENDED_SEQUENCES: Final = frozenset(
    {"ports", "env_file", "expose", "dns", "dns_search", "cap_add", "cap_drop", "secrets"}
)


def _merge_value(key: str, base: Any, override: Any) -> Any:
    if isinstance(override, _Override | _OverrideMap):
        return override
    if key == "environment":
        return {**_environment(base), **_environment(override)}
    if key == "volumes" and isinstance(base, list) and isinstance(override, list):
        merged = {_volume(v).target: v for v in base}
        merged.update({_volume(v).target: v for v in override})
        return list(merged.values())
    if key in _APPENDED_SEQUENCES and base is not None:
        return _as_list(base) + _as_list(override)
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge_value(k, base[k], v) if k in base else v
        return merged
    return override


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | Mapping) else list(value)


def resolve_service(
    name: str,
    raw: Mapping[str, Any],
    documents: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The raw service with its `extends` chain applied (pure).

    ``documents`` maps the ``extends.file`` values (as written) to parsed documents.
    Raises KeyError naming the file or service when an `extends` target is missing.
    """
    extends = raw.get("extends")
    if not isinstance(extends, Mapping):
        return dict(raw)
    file_name = extends.get("file")
    source = documents[file_name] if file_name else {}
    base_raw = source.get("services", {})[extends["service"]]
    base = resolve_service(extends["service"], base_raw, documents)
    merged: dict[str, Any] = dict(base)
    for key, value in raw.items():
        if key == "extends":
            continue
        merged[key] = _merge_value(key, base.get(key), value) if key in base else value
    return merged


# --- checks --------------------------------------------------------------------------------


def check_prod(
    compose: Mapping[str, Any],
    env_example_vars: Collection[str],
    settings_vars: Collection[str],
    contract: DeployContract = DEFAULT_CONTRACT,
) -> list[str]:
    """Violations of the operator handoff contract by a parsed docker-compose.prod.yml.

    ``settings_vars`` are the variables the bot reads; each must be in
    ``env_example_vars``, as must every variable the file interpolates.
    """
    problems: list[str] = []
    services = compose.get("services") or {}
    bot_name = contract.bot_service
    if bot_name not in services:
        return [f"prod: no '{bot_name}' service"]
    extra = sorted(set(services) - {bot_name})
    if extra:
        problems.append(
            f"prod: must contain the bot only; remove services {', '.join(extra)} "
            "(the homeserver and the agent platform are the operator's own)"
        )
    bot = parse_service(bot_name, services[bot_name])
    if not bot.image:
        problems.append(f"prod: service '{bot_name}' has no image")
    if contract.prod_env_file not in bot.env_files:
        problems.append(
            f"prod: service '{bot_name}' must read its settings from env_file "
            f"{contract.prod_env_file!r}"
        )
    if bot.restart in (None, "no"):
        problems.append(f"prod: service '{bot_name}' needs a restart policy (unless-stopped)")
    problems += _check_readiness(bot, contract, "prod")
    problems += _check_durable_paths(bot, compose, contract, "prod")
    problems += _check_workspace_choice(bot, compose, contract)
    for service_name, raw in services.items():
        service = parse_service(service_name, raw)
        problems += _check_secrets(service, contract, "prod")
        problems += _check_ports(service, "prod")
    documented = set(env_example_vars)
    for name in sorted(set(settings_vars) - documented):
        problems.append(f"prod: setting {name} is not documented in .env.example")
    for name in sorted(interpolated_variables(compose) - documented):
        problems.append(f"prod: variable ${{{name}}} used by the file is not in .env.example")
    return problems


def check_fullstack(
    compose: Mapping[str, Any],
    documents: Mapping[str, Mapping[str, Any]],
    contract: DeployContract = DEFAULT_CONTRACT,
) -> list[str]:
    """Violations of the E2E stack contract by a parsed docker-compose.fullstack.yml.

    ``documents`` maps each file named by an ``extends`` (as written, e.g.
    ``docker-compose.prod.yml``) to its parsed document, so inherited volumes and
    healthchecks are checked as Compose will run them.
    """
    problems: list[str] = []
    raw_services = compose.get("services") or {}
    required = (contract.bot_service, contract.homeserver_service, contract.platform_service)
    missing = [name for name in required if name not in raw_services]
    if missing:
        return [f"fullstack: missing services {', '.join(missing)}"]
    try:
        services = {
            name: parse_service(name, resolve_service(name, raw, documents))
            for name, raw in raw_services.items()
        }
    except KeyError as exc:
        return [f"fullstack: an extends target is missing: {exc}"]

    bot = services[contract.bot_service]
    extends = parse_service(contract.bot_service, raw_services[contract.bot_service]).extends
    if not extends or extends.get("file") != contract.prod_file_name:
        problems.append(
            f"fullstack: service '{bot.name}' must extend the prod bot service "
            f"(extends: {{file: {contract.prod_file_name}, service: {contract.bot_service}}})"
        )
    problems += _check_readiness(bot, contract, "fullstack")
    problems += _check_durable_paths(bot, compose, contract, "fullstack")
    problems += _check_shared_workspace(bot, services[contract.platform_service], contract)

    one_shot = {
        target
        for service in services.values()
        for target, dep in service.depends_on.items()
        if dep.condition == "service_completed_successfully"
    }
    for service in services.values():
        problems += _check_secrets(service, contract, "fullstack")
        problems += _check_ports(service, "fullstack")
        if service.name not in one_shot and not _has_healthcheck(service):
            problems.append(f"fullstack: service '{service.name}' has no healthcheck")
        if any(re.search(r"\bsleep\b", part) for part in service.command):
            problems.append(
                f"fullstack: service '{service.name}' sleeps in its command; gate on health"
            )
        problems += _check_dependencies(service, services)

    for needed in (contract.homeserver_service, contract.platform_service):
        condition = bot.depends_on.get(needed)
        if condition is None or condition.condition != "service_healthy":
            problems.append(
                f"fullstack: service '{bot.name}' must depend on '{needed}' with "
                "condition: service_healthy"
            )
    return problems


def _has_healthcheck(service: Service) -> bool:
    return service.healthcheck is not None and service.healthcheck.active


def _check_readiness(bot: Service, contract: DeployContract, label: str) -> list[str]:
    check = bot.healthcheck
    if check is None or not check.active:
        return [f"{label}: service '{bot.name}' has no healthcheck"]
    if not any(contract.readiness_path in part for part in check.test):
        return [
            f"{label}: service '{bot.name}' healthcheck must probe {contract.readiness_path} "
            "(ready = reconciled and syncing)"
        ]
    return []


def _check_durable_paths(
    bot: Service, compose: Mapping[str, Any], contract: DeployContract, label: str
) -> list[str]:
    problems: list[str] = []
    declared = set(compose.get("volumes") or {})
    for durable in contract.durable_paths:
        value = bot.environment.get(durable.setting)
        if not value or not value.startswith("/"):
            problems.append(
                f"{label}: service '{bot.name}' must set {durable.setting} to an absolute "
                "path in `environment:` so the check can see it is on a volume"
            )
            continue
        path = PurePosixPath(value)
        needed = path.parent if durable.kind is PathKind.FILE else path
        mount = _mount_holding(bot.volumes, needed)
        if mount is None:
            problems.append(
                f"{label}: {durable.setting} ({needed}) of service '{bot.name}' is not on a "
                "volume; it would be lost when the container is re-created"
            )
        elif mount.type != "volume" or not mount.source:
            problems.append(
                f"{label}: {durable.setting} ({needed}) of service '{bot.name}' must be on a "
                f"named volume, not {mount.type if mount.source else 'an anonymous volume'}"
            )
        elif mount.source not in declared:
            problems.append(
                f"{label}: volume '{mount.source}' ({durable.setting}) is not declared under "
                "the top-level `volumes:`"
            )
        elif mount.read_only:
            problems.append(f"{label}: volume '{mount.source}' ({durable.setting}) is read-only")
    return problems


def _mount_holding(mounts: Collection[VolumeMount], path: PurePosixPath) -> VolumeMount | None:
    holding = [m for m in mounts if _is_within(path, PurePosixPath(m.target))]
    # The deepest mount wins, as in the container's mount table.
    return max(holding, key=lambda m: len(PurePosixPath(m.target).parts), default=None)


def _is_within(path: PurePosixPath, directory: PurePosixPath) -> bool:
    return path == directory or directory in path.parents


def _check_shared_workspace(bot: Service, platform: Service, contract: DeployContract) -> list[str]:
    value = bot.environment.get(contract.workspace_setting)
    if not value:
        return []  # reported by the durable path check
    bot_mount = _mount_holding(bot.volumes, PurePosixPath(value))
    if bot_mount is None or not bot_mount.source:
        return []  # idem
    shared = [m for m in platform.volumes if m.source == bot_mount.source]
    if not shared:
        return [
            f"fullstack: volume '{bot_mount.source}' ({contract.workspace_setting}) is not "
            f"mounted in '{platform.name}'"
        ]
    problems = [
        f"fullstack: '{platform.name}' mounts '{m.source}' at {m.target}, the bot at "
        f"{bot_mount.target}; use the same in-container path"
        for m in shared
        if m.target != bot_mount.target
    ]
    platform_path = platform.environment.get(contract.platform_workspace_setting)
    if platform_path is not None and platform_path != value:
        problems.append(
            f"fullstack: {contract.platform_workspace_setting}={platform_path} of "
            f"'{platform.name}' differs from the bot's {contract.workspace_setting}={value}"
        )
    return problems


def _check_workspace_choice(
    bot: Service, compose: Mapping[str, Any], contract: DeployContract
) -> list[str]:
    """prod: the workspace volume's name and `external` come from .env (the operator's
    platform mounts the same volume); a project-private volume would hide the files."""
    value = bot.environment.get(contract.workspace_setting)
    mount = _mount_holding(bot.volumes, PurePosixPath(value)) if value else None
    if mount is None or not mount.source:
        return []  # reported by the durable-path check
    declared = (compose.get("volumes") or {}).get(mount.source)
    declared = declared if isinstance(declared, Mapping) else {}
    problems = []
    for key, variable in (
        ("name", contract.workspace_volume_variable),
        ("external", contract.workspace_external_variable),
    ):
        if variable not in interpolated_variables(declared.get(key)):
            problems.append(
                f"prod: volume '{mount.source}' ({contract.workspace_setting}) must take its "
                f"`{key}` from ${{{variable}}} so the operator can share it with the agent "
                "platform"
            )
    return problems


def _check_secrets(service: Service, contract: DeployContract, label: str) -> list[str]:
    return [
        f"{label}: service '{service.name}' has secret {name} inline in `environment:`; "
        "put it in the env_file"
        for name, value in service.environment.items()
        if (name in contract.secret_settings or _SECRET_NAME.search(name))
        and value
        and not _PURE_INTERPOLATION.match(value)
    ]


def _check_ports(service: Service, label: str) -> list[str]:
    return [
        f"{label}: service '{service.name}' publishes port {port.target} on "
        f"{port.host_ip or 'every interface'}; publish on 127.0.0.1 only"
        for port in service.ports
        if port.host_ip not in LOOPBACK_HOSTS
    ]


def _check_dependencies(service: Service, services: Mapping[str, Service]) -> list[str]:
    problems: list[str] = []
    if service.depends_on_short_form:
        problems.append(
            f"fullstack: service '{service.name}' uses the short depends_on form; use "
            "`condition: service_healthy` (or service_completed_successfully for a job)"
        )
        return problems
    for target, dependency in service.depends_on.items():
        if dependency.condition not in ("service_healthy", "service_completed_successfully"):
            problems.append(
                f"fullstack: service '{service.name}' depends on '{target}' with condition "
                f"{dependency.condition}; gate on service_healthy"
            )
        other = services.get(target)
        if other is None:
            problems.append(f"fullstack: service '{service.name}' depends on unknown '{target}'")
        elif dependency.condition == "service_healthy" and not _has_healthcheck(other):
            problems.append(
                f"fullstack: service '{service.name}' waits for '{target}' to be healthy, "
                f"but '{target}' has no healthcheck"
            )
    return problems
