"""The agent registry: which agents a user can talk to.

Loaded from YAML; every error names the file, the entry and the field and says
how to fix it.

    agents:
      - id: echo
        name: Echo
        description: Repeats what you say.
        backend: mock
        default: true
      - id: helper
        name: Helper
        backend: http
        url: http://platform-agent:8090
        auth_token_env: HELPER_TOKEN
        avatar: avatars/helper.png     # optional: an image file (relative to this
                                       # file) or an mxc:// URI
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# An avatar given as Matrix media: mxc://<server name>/<media id>.
MXC_PATTERN = re.compile(r"^mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+$")
AVATAR_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


class AgentBackend(enum.StrEnum):
    MOCK = "mock"
    HTTP = "http"


class AgentEntry(BaseModel):
    """One agent of the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=AGENT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    backend: AgentBackend = AgentBackend.MOCK
    url: str | None = None
    auth_token_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    default: bool = False
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    # An mxc:// URI, or an image file: a relative path is taken from the registry file's
    # folder and kept absolute (it must exist when the registry is loaded from a file).
    avatar: str | None = None

    @field_validator("avatar")
    @classmethod
    def _avatar_is_mxc_or_image(cls, avatar: str | None, info: ValidationInfo) -> str | None:
        if avatar is None or MXC_PATTERN.match(avatar):
            return avatar
        if avatar.startswith("mxc://"):
            raise ValueError(f"{avatar!r} is not an mxc URI (mxc://<server>/<media id>)")
        if "://" in avatar:
            raise ValueError(f"{avatar!r}: give an mxc:// URI or an image file path")
        path = Path(avatar)
        if path.suffix.lower() not in AVATAR_SUFFIXES:
            raise ValueError(
                f"{avatar!r} is not an image file name (one of {', '.join(AVATAR_SUFFIXES)})"
            )
        base = (info.context or {}).get("base_dir")
        if isinstance(base, Path):
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise ValueError(f"no image file at {str(path)!r}; fix the path")
            return str(path.resolve())
        return avatar

    @model_validator(mode="after")
    def _http_needs_url(self) -> AgentEntry:
        if self.backend is AgentBackend.HTTP:
            if not self.url:
                raise ValueError("backend 'http' needs a 'url' (e.g. http://platform-agent:8090)")
            if not re.match(r"^https?://[^\s/]+", self.url):
                raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self


class AgentRegistryFile(BaseModel):
    """The whole YAML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agents: list[AgentEntry] = Field(min_length=1)

    @field_validator("agents")
    @classmethod
    def _unique_ids_one_default(cls, agents: list[AgentEntry]) -> list[AgentEntry]:
        # The error's location is the whole list, so the message names the entries.
        first_entry: dict[str, int] = {}
        for number, agent in enumerate(agents, start=1):
            if agent.id in first_entry:
                raise ValueError(
                    f"entries #{first_entry[agent.id]} and #{number} both have id {agent.id!r}; "
                    "ids must be unique"
                )
            first_entry[agent.id] = number
        defaults = [f"#{n} (id {a.id!r})" for n, a in enumerate(agents, start=1) if a.default]
        if len(defaults) > 1:
            raise ValueError(
                f"entries {', '.join(defaults)} all have default: true; at most one may"
            )
        return agents


class RegistryError(Exception):
    """The registry file is missing, unreadable or invalid; the message says how to fix it."""


class AgentRegistry:
    """Validated, read-only view of the agents, in file order."""

    def __init__(self, agents: list[AgentEntry], source: str = "<built-in>") -> None:
        self._agents = {a.id: a for a in agents}
        self.source = source
        defaults = [a for a in agents if a.default]
        self.default = defaults[0] if defaults else agents[0]

    def __iter__(self) -> Iterator[AgentEntry]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def get(self, agent_id: str | None) -> AgentEntry | None:
        return self._agents.get(agent_id) if agent_id is not None else None


BUILTIN_ECHO = AgentEntry(
    id="echo",
    name="Echo",
    description="Built-in in-process agent that repeats what you say.",
    backend=AgentBackend.MOCK,
    default=True,
)


def builtin_registry() -> AgentRegistry:
    """The registry used when none is configured: one in-process echo agent."""
    return AgentRegistry([BUILTIN_ECHO])


def parse_registry(text: str, source: str, *, base_dir: Path | None = None) -> AgentRegistry:
    """Parse registry YAML; raises RegistryError naming source, entry and field.

    `base_dir`: the folder relative avatar paths are taken from (and checked in);
    without it they are kept as written, unchecked.
    """
    try:
        raw = yaml.safe_load(text)
    # PyYAML's constructors raise plain ValueError for scalars it cannot build
    # (`2001-13-01`, `!!int x`), and deep nesting exhausts the recursion limit.
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}. Fix the syntax.") from exc
    if not isinstance(raw, dict):
        raise RegistryError(
            f"{source}: expected a mapping with a top-level 'agents:' list, "
            f"got {type(raw).__name__}."
        )
    try:
        parsed = AgentRegistryFile.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise RegistryError(_describe(source, raw, exc)) from exc
    return AgentRegistry(parsed.agents, source)


def load_registry(path: Path) -> AgentRegistry:
    """Read and validate the registry at `path`; raises RegistryError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(
            f"{path}: cannot read the agent registry ({exc.strerror}). "
            "Set SURFACE_AGENT_REGISTRY to an existing YAML file, "
            "or unset it for the built-in echo agent."
        ) from exc
    return parse_registry(text, str(path), base_dir=path.parent)


def _describe(source: str, raw: dict[str, object], exc: ValidationError) -> str:
    lines = [f"{source}: invalid agent registry:"]
    agents = raw.get("agents")
    for err in exc.errors():
        loc = list(err["loc"])
        where = "file"
        if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
            index = loc[1]
            entry_id = None
            if isinstance(agents, list) and index < len(agents) and isinstance(agents[index], dict):
                entry_id = agents[index].get("id")
            where = f"entry #{index + 1}" + (f" (id {entry_id!r})" if entry_id else "")
            loc = loc[2:]
        elif loc and loc[0] == "agents":
            loc = loc[1:]
            where = "agents list"
        field = ".".join(str(part) for part in loc) or "(entry)"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where}, field '{field}': {message}")
    lines.append("Fix these fields in the file, then run `surface check-config` again.")
    return "\n".join(lines)
