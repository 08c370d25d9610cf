"""The agent registry: parsing, defaults, and errors that name file, entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contracts.registry import (
    AgentBackend,
    AgentRegistry,
    RegistryError,
    load_registry,
    parse_registry,
)

SOURCE = "/etc/surface/agents.yaml"

VALID = """\
agents:
  - id: echo
    name: Echo
    description: Repeats what you say.
    backend: mock
  - id: helper
    name: Helper
    backend: http
    url: http://platform-agent:8090
    auth_token_env: HELPER_TOKEN
    default: true
    timeout_seconds: 30
"""


def _refusal(text: str) -> str:
    with pytest.raises(RegistryError) as refused:
        parse_registry(text, SOURCE)
    return str(refused.value)


def _parse_or_refusal(text: str) -> AgentRegistry | RegistryError:
    """The registry, or the RegistryError; any other exception propagates and fails the test."""
    try:
        return parse_registry(text, SOURCE)
    except RegistryError as exc:
        return exc


def test_valid_file_parses_in_file_order() -> None:
    registry = parse_registry(VALID, SOURCE)

    assert [a.id for a in registry] == ["echo", "helper"]
    assert registry.source == SOURCE
    helper = registry.get("helper")
    assert helper is not None
    assert helper.backend is AgentBackend.HTTP
    assert helper.url == "http://platform-agent:8090"
    assert helper.auth_token_env == "HELPER_TOKEN"
    assert helper.timeout_seconds == 30
    assert "echo" in registry
    assert registry.get("nobody") is None
    assert registry.get(None) is None


def test_entry_marked_default_is_the_default() -> None:
    registry = parse_registry(VALID, SOURCE)

    assert registry.default.id == "helper"


def test_first_entry_is_the_default_when_none_is_marked() -> None:
    text = "agents:\n  - {id: zeta, name: Zeta}\n  - {id: alpha, name: Alpha}\n"

    registry = parse_registry(text, SOURCE)

    assert registry.default.id == "zeta"


def test_load_registry_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(VALID, encoding="utf-8")

    registry = load_registry(path)

    assert isinstance(registry, AgentRegistry)
    assert registry.source == str(path)
    assert len(registry) == 2


def test_an_avatar_may_be_an_mxc_uri() -> None:
    registry = parse_registry(
        "agents:\n  - {id: echo, name: Echo, avatar: 'mxc://example.org/AbC_12-x'}\n", SOURCE
    )

    agent = registry.get("echo")
    assert agent is not None and agent.avatar == "mxc://example.org/AbC_12-x"
    assert registry.default.avatar == "mxc://example.org/AbC_12-x"


def test_a_relative_avatar_file_is_found_next_to_the_registry(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "echo.png").write_bytes(b"\x89PNG")
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  - {id: echo, name: Echo, avatar: faces/echo.png}\n")

    agent = load_registry(path).default

    assert agent.avatar == str((tmp_path / "faces" / "echo.png").resolve())


@pytest.mark.parametrize(
    ("avatar", "says"),
    [
        ("mxc://example.org", "not an mxc URI"),
        ("https://example.org/a.png", "mxc:// URI or an image file"),
        ("faces/echo.txt", "not an image file name"),
        ("faces/missing.png", "no image file at"),
    ],
)
def test_a_bad_avatar_names_file_entry_and_field(tmp_path: Path, avatar: str, says: str) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        f"agents:\n  - {{id: echo, name: Echo}}\n  - {{id: x, avatar: '{avatar}', name: X}}\n"
    )

    with pytest.raises(RegistryError) as refused:
        load_registry(path)

    message = str(refused.value)
    assert str(path) in message
    assert "entry #2 (id 'x'), field 'avatar'" in message
    assert says in message


def test_http_backend_without_url_names_file_entry_and_field() -> None:
    text = "agents:\n  - {id: echo, name: Echo}\n  - {id: helper, name: Helper, backend: http}\n"

    message = _refusal(text)

    assert SOURCE in message
    assert "entry #2 (id 'helper')" in message
    assert "'url'" in message


def test_bad_id_names_file_entry_and_field() -> None:
    message = _refusal("agents:\n  - {id: Bad Id!, name: Bad}\n")

    assert SOURCE in message
    assert "entry #1 (id 'Bad Id!')" in message
    assert "field 'id'" in message


def test_duplicate_ids_name_both_entries_and_the_id() -> None:
    text = (
        "agents:\n"
        "  - {id: echo, name: One}\n"
        "  - {id: other, name: Two}\n"
        "  - {id: echo, name: Three}\n"
    )

    message = _refusal(text)

    assert SOURCE in message
    assert "#1" in message
    assert "#3" in message
    assert "'echo'" in message
    assert "id" in message


def test_two_defaults_name_both_entries_and_the_field() -> None:
    text = (
        "agents:\n"
        "  - {id: first, name: First, default: true}\n"
        "  - {id: second, name: Second, default: true}\n"
    )

    message = _refusal(text)

    assert SOURCE in message
    assert "#1 (id 'first')" in message
    assert "#2 (id 'second')" in message
    assert "default" in message


def test_unknown_field_names_file_entry_and_field() -> None:
    message = _refusal("agents:\n  - {id: echo, name: Echo, colour: red}\n")

    assert SOURCE in message
    assert "entry #1 (id 'echo')" in message
    assert "field 'colour'" in message


def test_unknown_top_level_field_is_refused() -> None:
    message = _refusal("agents:\n  - {id: echo, name: Echo}\nextras: 1\n")

    assert SOURCE in message
    assert "'extras'" in message


def test_empty_agents_list_is_refused() -> None:
    message = _refusal("agents: []\n")

    assert SOURCE in message
    assert "agents" in message


def test_text_that_is_not_yaml_is_refused() -> None:
    message = _refusal("agents: [\n  - {id: echo\n")

    assert SOURCE in message
    assert "not valid YAML" in message


def test_top_level_list_is_refused() -> None:
    message = _refusal("- id: echo\n  name: Echo\n")

    assert SOURCE in message
    assert "mapping" in message
    assert "list" in message


def test_missing_file_names_path_and_setting(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"

    with pytest.raises(RegistryError) as refused:
        load_registry(path)

    assert str(path) in str(refused.value)
    assert "SURFACE_AGENT_REGISTRY" in str(refused.value)


@settings(max_examples=300, deadline=None)
@given(st.text())
# PyYAML raises plain ValueError for these (found by this property).
@example("2001-13-01")
@example("agents: !!int abc")
@example("agents: [&a {id: *a}]")
@example("agents:\n  - id: echo\n    name: Echo\n    url: 0000-01-01\n")
def test_any_text_parses_or_raises_registry_error(text: str) -> None:
    outcome = _parse_or_refusal(text)

    if isinstance(outcome, RegistryError):
        assert SOURCE in str(outcome)
    else:
        registry = outcome
        assert len(registry) >= 1


_SCALARS = st.one_of(
    st.sampled_from(["echo", "Bad Id", "http", "mock", "true", "~", "1e9", "[]", "{}", "''"]),
    st.text(max_size=10),
)
_ENTRY_KEYS = st.sampled_from(
    ["id", "name", "backend", "url", "default", "timeout_seconds", "auth_token_env", "x"]
)


@st.composite
def _registry_like_yaml(draw: st.DrawFn) -> str:
    entries = draw(
        st.lists(st.dictionaries(_ENTRY_KEYS, _SCALARS, max_size=6), min_size=0, max_size=4)
    )
    lines = ["agents:"]
    for entry in entries:
        items = ", ".join(f"{key}: {value}" for key, value in entry.items())
        lines.append(f"  - {{{items}}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(_registry_like_yaml())
def test_registry_shaped_text_parses_or_raises_registry_error(text: str) -> None:
    outcome = _parse_or_refusal(text)

    if isinstance(outcome, RegistryError):
        assert SOURCE in str(outcome)
    else:
        registry = outcome
        assert registry.default in list(registry)
