"""How a Matrix event relates to others: threads, rich replies, edits, reactions. Pure.

Relations (`m.relates_to`) stay in the clear in encrypted rooms, so everything here
also works on an event the bot cannot decrypt, except reading its text.

- thread: `{"rel_type": "m.thread", "event_id": <root>, "is_falling_back": true,
  "m.in_reply_to": {"event_id": <latest in thread>}}`; with `is_falling_back` the
  `m.in_reply_to` is only there for clients without threads, not a real reply;
- rich reply: `{"m.in_reply_to": {"event_id": <quoted>}}`; older clients also put the
  quoted text at the top of `body` (lines starting "> ", then an empty line);
- edit: `{"rel_type": "m.replace", "event_id": <original>}`, the new text in `m.new_content`;
- reaction: an `m.reaction` event, `{"rel_type": "m.annotation", "event_id": <target>,
  "key": <emoji>}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.matrix import JsonDict, MatrixEvent

# Emoji may arrive with or without VARIATION SELECTOR-16 ("✅" / "✅\ufe0f").
_VS16 = "\ufe0f"


def _relates_to(content: JsonDict) -> JsonDict:
    relates = content.get("m.relates_to")
    return relates if isinstance(relates, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def thread_root(content: JsonDict) -> str | None:
    """The root event id of the thread a message was written in; None outside a thread."""
    relates = _relates_to(content)
    if relates.get("rel_type") != "m.thread":
        return None
    return _str_or_none(relates.get("event_id"))


def replied_to(content: JsonDict) -> str | None:
    """The event a message quotes as a rich reply; None for no reply or a thread fallback."""
    relates = _relates_to(content)
    if relates.get("rel_type") == "m.thread" and relates.get("is_falling_back") is True:
        return None
    in_reply_to = relates.get("m.in_reply_to")
    return _str_or_none(in_reply_to.get("event_id")) if isinstance(in_reply_to, dict) else None


def replaced(content: JsonDict) -> str | None:
    """The event an edit (`m.replace`) replaces; None when the content is no edit."""
    relates = _relates_to(content)
    if relates.get("rel_type") != "m.replace":
        return None
    return _str_or_none(relates.get("event_id"))


@dataclass(frozen=True, slots=True)
class Annotation:
    """A reaction: `key` (an emoji, without VS16) on the event `target`."""

    target: str
    key: str


def annotation(content: JsonDict) -> Annotation | None:
    relates = _relates_to(content)
    target = _str_or_none(relates.get("event_id"))
    key = relates.get("key")
    if relates.get("rel_type") != "m.annotation" or target is None or not isinstance(key, str):
        return None
    return Annotation(target, normalize_emoji(key))


def normalize_emoji(key: str) -> str:
    """The emoji without variation selectors, so "✅" and "✅\\ufe0f" are one answer."""
    return key.replace(_VS16, "").strip()


def strip_reply_fallback(body: str) -> str:
    """`body` without the quoted lines an older client put above a rich reply.

    The fallback is a block of lines starting with ">" at the very top, then one
    empty line; a body that only quotes (no empty line after) is left as it is.
    """
    lines = body.split("\n")
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index == 0 or index >= len(lines) or lines[index] != "":
        return body
    return "\n".join(lines[index + 1 :])


def new_text(content: JsonDict) -> str | None:
    """The text an edit gives its message (`m.new_content.body`); None when there is none."""
    new_content = content.get("m.new_content")
    if not isinstance(new_content, dict):
        return None
    return _str_or_none(new_content.get("body"))


def current_text(event: MatrixEvent) -> str | None:
    """An event's text as people see it now: its latest edit's (from `unsigned`), else its body.

    The homeserver bundles the latest edit by the same sender into
    `unsigned["m.relations"]["m.replace"]` when it hands out an event.
    """
    relations = event.unsigned.get("m.relations")
    edit = relations.get("m.replace") if isinstance(relations, dict) else None
    if isinstance(edit, dict) and edit.get("sender", event.sender) == event.sender:
        content = edit.get("content")
        edited = new_text(content) if isinstance(content, dict) else None
        if edited is not None:
            return edited
    body = event.content.get("body")
    if not isinstance(body, str):
        return None
    return strip_reply_fallback(body) if replied_to(event.content) else body
