"""tasks/relations.py: what a Matrix event's relations say, and the reply fallback."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.matrix import MatrixEvent
from tasks.relations import (
    Annotation,
    annotation,
    current_text,
    replaced,
    replied_to,
    strip_reply_fallback,
    thread_root,
)

THREAD = {
    "m.relates_to": {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$latest"},
    }
}


def test_a_thread_message_names_its_root_and_is_no_reply() -> None:
    assert thread_root(THREAD) == "$root"
    assert replied_to(THREAD) is None


def test_a_real_reply_inside_a_thread_is_a_reply() -> None:
    content = {"m.relates_to": {**THREAD["m.relates_to"], "is_falling_back": False}}

    assert (thread_root(content), replied_to(content)) == ("$root", "$latest")


def test_a_rich_reply_names_the_quoted_event() -> None:
    content = {"m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}}

    assert (thread_root(content), replied_to(content), replaced(content)) == (None, "$q", None)


def test_garbage_relations_are_no_relations() -> None:
    for content in ({}, {"m.relates_to": "x"}, {"m.relates_to": {"rel_type": "m.thread"}}):
        assert thread_root(content) is None
        assert replied_to(content) is None
        assert replaced(content) is None
        assert annotation(content) is None


def test_an_annotation_key_loses_its_variation_selector() -> None:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$q", "key": "✅\ufe0f"}}

    assert annotation(content) == Annotation("$q", "✅")


def test_the_reply_fallback_is_stripped() -> None:
    body = "> <@a:x> first line\n> second line\n\nmy answer\n\n> a quote of mine"

    assert strip_reply_fallback(body) == "my answer\n\n> a quote of mine"


def test_a_body_that_only_quotes_is_kept() -> None:
    assert strip_reply_fallback("> just a quote") == "> just a quote"


@given(st.text())
def test_a_body_without_a_leading_quote_is_unchanged(body: str) -> None:
    if not body.startswith(">"):
        assert strip_reply_fallback(body) == body


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"))), st.text())
def test_any_fallback_block_is_removed_exactly(quoted: list[str], text: str) -> None:
    fallback = "".join(f"> {line}\n" for line in quoted)
    if quoted:
        assert strip_reply_fallback(f"{fallback}\n{text}") == text


def _event(content: dict[str, object], unsigned: dict[str, object] | None = None) -> MatrixEvent:
    return MatrixEvent("$e", "!r", "@a:x", "m.room.message", content, unsigned=unsigned or {})


def test_current_text_is_the_latest_edit_by_the_same_sender() -> None:
    edit = {"sender": "@a:x", "content": {"m.new_content": {"body": "edited"}}}
    foreign = {"sender": "@b:x", "content": {"m.new_content": {"body": "not theirs"}}}

    assert current_text(_event({"body": "first"}, {"m.relations": {"m.replace": edit}})) == "edited"
    assert current_text(_event({"body": "first"}, {"m.relations": {"m.replace": foreign}})) == (
        "first"
    )
    assert current_text(_event({})) is None
