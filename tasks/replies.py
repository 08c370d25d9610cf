"""Sending the bot's messages: Markdown to Matrix HTML, idempotent sends, streamed edits.

Every message the bot sends because of a user event carries that event's id (as a
rich reply, `m.relates_to.m.in_reply_to`, and in `lambda.surface.reply_to`) and a
transaction id derived from it, so a resend
after a crash is de-duplicated by the homeserver, and after a loss of local
state the bot can still tell what it already answered. An answer to a message
written in a thread goes into that thread (`thread`: an `m.thread` relation with
the in-thread reply fallback to the triggering message).
"""

from __future__ import annotations

import hashlib
import json

import markdown as md

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import JsonDict, MatrixPort


class _RawHtmlAsText(md.extensions.Extension):
    """Raw HTML in the text (an agent's answer, a user's words echoed) is shown, not obeyed.

    Python-Markdown passes raw HTML through by default; without its two raw-HTML
    readers the text is escaped like any other, so `<script>` reaches the client as
    `&lt;script&gt;` whatever that client's sanitiser does.
    """

    def extendMarkdown(self, md: md.Markdown) -> None:
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


# One converter, reset per text: building a Markdown instance (it loads every extension)
# took a fifth of the bot's CPU per echoed message.
_MARKDOWN = md.Markdown(
    extensions=["fenced_code", "sane_lists", "nl2br", "tables", _RawHtmlAsText()],
    output_format="html",
)


def render_markdown(text: str) -> str:
    """Markdown to the HTML subset Matrix clients show (`org.matrix.custom.html`)."""
    return _MARKDOWN.reset().convert(text).strip()


def txn_id_for(event_id: str, purpose: str) -> str:
    """Deterministic transaction id: the same trigger and purpose give the same id."""
    # surrogatepass: JSON may carry a lone surrogate ("\ud800") into an id; any str hashes.
    key = f"{purpose}\x00{event_id}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:32]


# The homeserver refuses an event whose JSON (the content and the envelope: ids, hashes,
# signatures, prev and auth events) is over this many bytes (M_TOO_LARGE).
MAX_EVENT_BYTES = 65_536
# What the envelope takes, with room to spare (Synapse's is under 1,500 bytes with ten prev
# events); the content of a message or an edit may use the rest.
EVENT_ENVELOPE_BYTES = 4_096


def content_bytes(content: JsonDict) -> int:
    """Bytes of `content` in the event JSON (canonical JSON: UTF-8, no spaces, no \\u escapes)."""
    encoded = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return len(encoded.encode("utf-8", "surrogatepass"))


def message_content(
    text: str, *, reply_to: str | None, notice: bool = False, thread: str | None = None
) -> JsonDict:
    content: JsonDict = {
        "msgtype": "m.notice" if notice else "m.text",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": render_markdown(text),
    }
    if reply_to:
        content[REPLY_TO_FIELD] = reply_to
        # A rich reply: the relation stays in the clear in an encrypted room, so catch-up
        # after a loss of the crypto store still sees what was answered (tasks/catchup.py).
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    if thread:
        content["m.relates_to"] = thread_relation(thread, reply_to or thread)
    return content


def thread_relation(root: str, latest: str) -> JsonDict:
    """In the thread of `root`; clients without threads show it as a reply to `latest`."""
    return {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": latest},
    }


def edit_content(original_event_id: str, text: str, *, reply_to: str | None) -> JsonDict:
    new_content = message_content(text, reply_to=None)
    content: JsonDict = {
        "msgtype": "m.text",
        "body": "* " + text,
        "format": "org.matrix.custom.html",
        "formatted_body": "* " + new_content["formatted_body"],
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_event_id},
    }
    if reply_to:
        content[REPLY_TO_FIELD] = reply_to
    return content


class Replier:
    """Sends replies to user events in one room."""

    def __init__(self, matrix: MatrixPort) -> None:
        self._matrix = matrix

    async def say(
        self,
        room_id: str,
        text: str,
        *,
        reply_to: str,
        purpose: str = "reply",
        notice: bool = True,
        thread: str | None = None,
    ) -> str:
        return await self._matrix.send_message(
            room_id,
            message_content(text, reply_to=reply_to, notice=notice, thread=thread),
            txn_id=txn_id_for(reply_to, purpose),
        )

    async def react(self, room_id: str, target: str, key: str, *, reply_to: str) -> str:
        """Annotate `target` with the emoji `key` (an `m.reaction`), once per trigger and key."""
        return await self._matrix.send_message(
            room_id,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}},
            txn_id=txn_id_for(reply_to, f"react:{key}"),
            event_type="m.reaction",
        )

    async def edit(
        self, room_id: str, original_event_id: str, text: str, *, reply_to: str, purpose: str
    ) -> str:
        return await self._matrix.send_message(
            room_id,
            edit_content(original_event_id, text, reply_to=reply_to),
            txn_id=txn_id_for(reply_to, purpose),
        )
