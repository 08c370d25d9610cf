"""Replies: Markdown to Matrix HTML, deterministic transaction ids, idempotent sends."""

from __future__ import annotations

from fakes import FakeMatrix
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.markers import REPLY_TO_FIELD
from tasks.replies import Replier, edit_content, message_content, render_markdown, txn_id_for


def test_render_markdown_bold() -> None:
    assert render_markdown("say **this**") == "<p>say <strong>this</strong></p>"


def test_render_markdown_inline_code() -> None:
    assert render_markdown("type `!help`") == "<p>type <code>!help</code></p>"


def test_render_markdown_shows_raw_html_as_text() -> None:
    html = render_markdown('hi <script>alert(1)</script> <b onclick="x()">bold</b>')

    assert "<script>" not in html and "<b " not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_render_markdown_html_block_is_text_and_code_is_escaped_once() -> None:
    html = render_markdown('<div onmouseover="x()">\nblock\n</div>\n\n`a < b`')

    assert "<div" not in html
    assert "&lt;div" in html
    assert "<code>a &lt; b</code>" in html


def test_render_markdown_fenced_code_block() -> None:
    html = render_markdown("```\nprint(1)\n```")

    assert html.startswith("<pre><code>")
    assert "print(1)" in html


def test_render_markdown_bullet_list() -> None:
    html = render_markdown("- one\n- two")

    assert html.startswith("<ul>")
    assert html.count("<li>") == 2


def test_render_markdown_numbered_list() -> None:
    html = render_markdown("1. first\n2. second")

    assert html.startswith("<ol>")
    assert html.count("<li>") == 2


def test_render_markdown_keeps_line_breaks() -> None:
    assert render_markdown("a\nb") == "<p>a<br>\nb</p>"


def test_txn_id_is_deterministic() -> None:
    assert txn_id_for("$event", "reply") == txn_id_for("$event", "reply")


def test_txn_id_is_32_hex_digits() -> None:
    txn_id = txn_id_for("$event", "reply")

    assert len(txn_id) == 32
    assert int(txn_id, 16) >= 0


def test_txn_id_differs_per_purpose() -> None:
    assert txn_id_for("$event", "reply") != txn_id_for("$event", "answer")


def test_txn_id_differs_per_event() -> None:
    assert txn_id_for("$a", "reply") != txn_id_for("$b", "reply")


# Purposes are our own constants and event ids never hold NUL, the separator.
no_nul = st.text(alphabet=st.characters(blacklist_characters="\x00"))


@settings(max_examples=300)
@given(no_nul, no_nul, no_nul, no_nul)
def test_txn_ids_collide_only_for_equal_inputs(e1: str, p1: str, e2: str, p2: str) -> None:
    same = txn_id_for(e1, p1) == txn_id_for(e2, p2)

    assert same == ((e1, p1) == (e2, p2))


def test_message_content_has_html_plain_body_and_reply_to() -> None:
    content = message_content("**hi**", reply_to="$trigger")

    assert content["body"] == "**hi**"
    assert content["format"] == "org.matrix.custom.html"
    assert content["formatted_body"] == "<p><strong>hi</strong></p>"
    assert content[REPLY_TO_FIELD] == "$trigger"
    assert content["msgtype"] == "m.text"


def test_notice_message_content() -> None:
    assert message_content("x", reply_to=None, notice=True)["msgtype"] == "m.notice"
    assert REPLY_TO_FIELD not in message_content("x", reply_to=None)


def test_edit_content_replaces_the_original() -> None:
    content = edit_content("$original", "new *text*", reply_to="$trigger")

    assert content["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$original"}
    assert content["m.new_content"]["body"] == "new *text*"
    assert content["m.new_content"]["formatted_body"] == "<p>new <em>text</em></p>"
    assert content["body"] == "* new *text*"
    assert content[REPLY_TO_FIELD] == "$trigger"


async def test_replier_sends_once_per_trigger_and_purpose() -> None:
    matrix = FakeMatrix()
    replier = Replier(matrix)

    first = await replier.say("!room", "hello", reply_to="$trigger")
    again = await replier.say("!room", "hello", reply_to="$trigger")
    other = await replier.say("!room", "oops", reply_to="$trigger", purpose="error")

    assert first == again
    assert other != first
    assert [m["body"] for m in matrix.messages_in("!room")] == ["hello", "oops"]


def test_render_markdown_keeps_nothing_from_one_text_to_the_next() -> None:
    first = render_markdown("[docs][d]\n\n[d]: https://example.org/")

    second = render_markdown("[docs][d]")

    assert 'href="https://example.org/"' in first
    assert "href" not in second


def test_a_message_in_a_thread_relates_to_its_root_with_the_reply_fallback() -> None:
    content = message_content("hi", reply_to="$asked", thread="$root")

    assert content["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$asked"},
    }
    # Outside a thread: a plain rich reply.
    assert message_content("hi", reply_to="$asked")["m.relates_to"] == {
        "m.in_reply_to": {"event_id": "$asked"}
    }
