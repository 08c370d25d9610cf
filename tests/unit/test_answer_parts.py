"""Answer parts: every part's event fits, nothing is lost, code blocks stay code blocks."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.answer_parts import Part, first_part, open_fence, split_answer
from tasks.replies import content_bytes, edit_content, message_content

EVENT = "$" + "e" * 43


def edit_fits(budget: int):  # type: ignore[no-untyped-def]
    def fits(shown: str) -> bool:
        return content_bytes(edit_content(EVENT, shown, reply_to=EVENT)) <= budget

    return fits


def chars_fit(limit: int):  # type: ignore[no-untyped-def]
    return lambda shown: len(shown) <= limit


def sources(parts: list[Part]) -> str:
    return "".join(p.source for p in parts)


# Markdown-ish text: words, paragraphs, fences, multi-byte characters, escapes.
_pieces = st.sampled_from(
    [
        "word ",
        "ünïcödé ",
        "日本語の文 ",
        "👩‍👩‍👧 ",
        "e\u0301 ",
        '"quoted" <b>&amp; ',
        "\n",
        "\n\n",
        "```python\n",
        "```\n",
        "~~~\n",
        "    indented\n",
        "- item\n",
        "\\",
        "x" * 50,
    ]
)
markdownish = st.lists(_pieces, max_size=120).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=markdownish, budget=st.integers(min_value=900, max_value=4000))
def test_every_part_fits_and_nothing_is_lost(text: str, budget: int) -> None:
    fits = edit_fits(budget)

    parts = split_answer(text, fits)

    assert sources(parts) == text
    assert all(p.source for p in parts)
    assert all(fits(p.shown) for p in parts)


@settings(max_examples=150, deadline=None)
@given(text=markdownish, limit=st.integers(min_value=60, max_value=600))
def test_no_part_but_the_last_ends_inside_a_code_block(text: str, limit: int) -> None:
    parts = split_answer(text, chars_fit(limit))

    assert sources(parts) == text
    assert all(open_fence(p.shown) is None for p in parts[:-1])
    if parts and open_fence(text) is None:
        assert open_fence(parts[-1].shown) is None


@given(text=st.text(max_size=400), limit=st.integers(min_value=1, max_value=200))
def test_any_text_splits_into_parts_that_concatenate_back(text: str, limit: int) -> None:
    parts = split_answer(text, chars_fit(limit))

    assert sources(parts) == text
    assert all(len(p.shown) <= limit for p in parts if p.shown == p.source)


def test_text_that_fits_is_one_part() -> None:
    assert split_answer("short", chars_fit(100)) == [Part("short", "short", "")]


def test_an_unclosed_fence_at_the_end_is_left_as_it_is() -> None:
    # A streamed answer may be in the middle of a code block: no closing fence is invented.
    assert first_part("```\ncode", chars_fit(100)).shown == "```\ncode"


def test_the_cut_prefers_a_paragraph_break() -> None:
    text = "first paragraph here\n\nsecond one, longer than the rest of it"

    [first, second] = split_answer(text, chars_fit(40))

    assert first.source == "first paragraph here\n\n"
    assert second.source == "second one, longer than the rest of it"


def test_the_cut_falls_between_words_without_a_line_break() -> None:
    parts = split_answer("alpha beta gamma delta epsilon", chars_fit(12))

    assert [p.source for p in parts] == ["alpha beta ", "gamma delta ", "epsilon"]


def test_a_code_block_that_fits_alone_moves_whole_to_the_next_part() -> None:
    block = "```python\nprint(1)\nprint(2)\n```\n"
    text = "Here is the code:\n" + block + "and after."

    parts = split_answer(text, chars_fit(len(block) + 5))

    assert parts[0].source == "Here is the code:\n"
    assert parts[1].source.startswith(block)
    assert all(open_fence(p.shown) is None for p in parts)


def test_a_code_block_too_big_for_one_part_is_closed_and_reopened() -> None:
    lines = "".join(f"line {n}\n" for n in range(40))
    text = "```python\n" + lines + "```\nafter"

    parts = split_answer(text, chars_fit(120))

    assert sources(parts) == text
    assert len(parts) > 2
    assert parts[0].shown.startswith("```python\n")
    assert parts[0].shown.endswith("\n```")
    assert parts[1].shown.startswith("```python\nline ")
    assert all(open_fence(p.shown) is None for p in parts)
    assert all(len(p.shown) <= 120 for p in parts)


def test_a_cut_never_separates_a_joined_emoji() -> None:
    family = "👩\u200d👩\u200d👧"
    text = "x" * 8 + family + "y" * 8

    parts = split_answer(text, chars_fit(10))

    assert sources(parts) == text
    assert any(family in p.source for p in parts)


def test_a_combining_accent_stays_with_its_letter() -> None:
    text = "abcde\u0301fgh"

    [first, *_] = split_answer(text, chars_fit(5))

    assert first.source == "abcd"


def test_measured_in_bytes_of_the_whole_event() -> None:
    # Every "ж" is two bytes, four times over in an edit, and again in the HTML.
    text = "ж" * 20_000
    budget = 61_440

    parts = split_answer(text, edit_fits(budget))

    assert sources(parts) == text
    assert len(parts) == 3
    sizes = [content_bytes(edit_content(EVENT, p.shown, reply_to=EVENT)) for p in parts]
    assert all(size <= budget for size in sizes)
    assert sizes[0] > budget * 0.9, "a part is not much smaller than it may be"


def test_a_message_holds_about_twice_the_text_of_an_edit() -> None:
    text = "a" * 40_000

    def message_fits(shown: str) -> bool:
        return content_bytes(message_content(shown, reply_to=EVENT)) <= 61_440

    assert len(split_answer(text, message_fits)) == 2
    assert len(split_answer(text, edit_fits(61_440))) == 3
