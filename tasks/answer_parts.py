"""Cutting an answer into messages that each fit the homeserver's event size limit. Pure.

A homeserver refuses an event whose JSON is over 65,536 bytes (`M_TOO_LARGE`), and
how many bytes a text becomes depends on the event that carries it (a message
carries it twice, an edit four times, HTML-escaped and JSON-escaped), so the
caller says what fits: `fits(shown) -> bool`, measured on the whole event it will
send. `first_part` takes the longest prefix that fits, cut at the best boundary
within it, in this order of preference:

- never inside a fenced code block if the block fits whole in a part of its own
  (the part ends just before the block);
- a paragraph break, else a line break, else a space, each only if it keeps at
  least half of what would fit;
- never between a character and a combining mark, joiner or variation selector
  that belongs to it (Python strings are code points: a UTF-8 sequence is never cut).

A code block too large for one part is cut at a line break inside it: the part
closes the fence and the next part reopens it with the same fence and language.
Apart from those added fence lines, the parts' `source` texts concatenate to the
original: nothing is lost.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

Fits = Callable[[str], bool]

_FENCE_OPEN = re.compile(r"^ {0,3}(?P<marker>`{3,}|~{3,})(?P<info>[^\n]*)$")
_FENCE_START = re.compile(r" {0,3}(```|~~~)")
_LANGUAGE = re.compile(r"[\w+#.-]{1,40}")
_ZERO_WIDTH_JOINER = "\u200d"


@dataclass(frozen=True, slots=True)
class Part:
    """One message's worth of an answer."""

    source: str  # the piece of the original text this part carries
    shown: str  # what the message shows: reopened fence + source + closing fence
    reopen: str  # what the next part must start with ("" unless the cut fell in a code block)


@dataclass(frozen=True, slots=True)
class _Fence:
    marker: str  # "```", "~~~~", ...
    opener: str  # the line that reopens it in the next part
    start: int  # index of its opening line in the scanned text (-1: opened before it)


def split_answer(text: str, fits: Fits) -> list[Part]:
    """The whole text as parts that each fit; `"".join(p.source for p in parts) == text`."""
    parts: list[Part] = []
    reopen = ""
    rest = text
    while rest:
        part = first_part(rest, fits, reopen=reopen)
        parts.append(part)
        rest = rest[len(part.source) :]
        reopen = part.reopen
    return parts


def first_part(text: str, fits: Fits, *, reopen: str = "") -> Part:
    """The longest good first part of `text` (not empty unless `text` is).

    `reopen` is the fence line the previous part left open (`Part.reopen`). The
    whole text is returned as it is when it fits, an unclosed fence included (the
    answer may still be streaming). If not even one character fits, the part is one
    character without any fence decoration: the caller's send will be refused and
    must say so.
    """
    if not text or fits(reopen + text):
        return Part(source=text, shown=reopen + text, reopen="")
    limit = _longest_fitting(text, fits, reopen)
    while limit > 0:
        cut = _best_cut(text, limit, fits, reopen)
        part = _part(text, cut, reopen)
        if fits(part.shown):
            return part
        limit = cut - 1  # the rendering is not quite monotonic: look a little shorter
    if reopen:
        return first_part(text, fits)
    return Part(source=text[:1], shown=text[:1], reopen="")


def open_fence(text: str) -> str | None:
    """The marker of the fenced code block still open at the end of `text`, if any."""
    fence = _open_fence(text)
    return fence.marker if fence else None


def _longest_fitting(text: str, fits: Fits, reopen: str) -> int:
    """The largest n < len(text) whose part (fences closed) fits; 0 when none does."""
    lo, hi = 0, len(text) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(_part(text, mid, reopen).shown):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _best_cut(text: str, limit: int, fits: Fits, reopen: str) -> int:
    """Where to cut, at or before `limit` (which fits)."""
    fence = _open_fence(reopen + text[:limit])
    if fence is not None:
        start = fence.start - len(reopen)
        if start > 0 and fits(_block(text, start, fence)):
            return start  # the block fits in a part of its own: keep it whole
        body_from = 0
        if start >= 0:  # the block opened in this part: cut after its opening line
            opening_end = text.find("\n", start)
            body_from = opening_end + 1 if opening_end >= 0 else len(text)
        newline = text.rfind("\n", body_from, limit)
        if newline >= 0:
            return newline + 1
        return _grapheme_start(text, limit)
    floor = limit // 2
    inside = _inside_fence_at_line_starts(text[:limit], reopen)
    for boundary in ("\n\n", "\n"):
        at = text.rfind(boundary, 0, limit)
        while at >= 0 and at + len(boundary) > floor:
            cut = at + len(boundary)
            if not inside.get(cut, True):
                return cut
            at = text.rfind(boundary, 0, at)
    for index in range(limit, floor, -1):
        if (
            text[index - 1].isspace()
            and not _inside_at(inside, text, index)
            and _mid_line_start(text, index) == index
        ):
            return index
    return _mid_line_start(text, _grapheme_start(text, limit))


def _part(text: str, cut: int, reopen: str) -> Part:
    """The part ending at `cut`, with an open fence closed and its reopening line."""
    shown = reopen + text[:cut]
    fence = _open_fence(shown)
    if fence is None or cut == len(text):
        return Part(source=text[:cut], shown=shown, reopen="")
    closing = ("" if shown.endswith("\n") else "\n") + fence.marker
    return Part(source=text[:cut], shown=shown + closing, reopen=fence.opener + "\n")


def _block(text: str, start: int, fence: _Fence) -> str:
    """The fenced block opening at `start`, through its closing line (or the text's end)."""
    index = text.find("\n", start)
    while index >= 0:
        line_end = text.find("\n", index + 1)
        line = text[index + 1 : line_end if line_end >= 0 else len(text)]
        if _closes(line, fence.marker):
            return text[start : line_end + 1 if line_end >= 0 else len(text)]
        index = line_end
    return text[start:]


def _open_fence(text: str) -> _Fence | None:
    fence: _Fence | None = None
    position = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if fence is None:
            match = _FENCE_OPEN.match(stripped)
            if match and not (match["marker"][0] == "`" and "`" in match["info"]):
                fence = _Fence(match["marker"], _opener(match["marker"], match["info"]), position)
        elif _closes(stripped, fence.marker):
            fence = None
        position += len(line)
    return fence


def _closes(line: str, marker: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(marker) and stripped == marker[0] * len(stripped)


def _opener(marker: str, info: str) -> str:
    language = _LANGUAGE.match(info.strip())
    return marker + (language.group(0) if language else "")


def _inside_fence_at_line_starts(text: str, reopen: str) -> dict[int, bool]:
    """For each line start in `text` (as an index into it): is a fence open there?"""
    inside: dict[int, bool] = {}
    carried = _open_fence(reopen)
    marker = carried.marker if carried else None
    position = 0
    for line in text.splitlines(keepends=True):
        inside[position] = marker is not None
        stripped = line.rstrip("\r\n")
        if marker is None:
            match = _FENCE_OPEN.match(stripped)
            if match and not (match["marker"][0] == "`" and "`" in match["info"]):
                marker = match["marker"]
        elif _closes(stripped, marker):
            marker = None
        position += len(line)
    inside[position] = marker is not None
    return inside


def _inside_at(inside: dict[int, bool], text: str, index: int) -> bool:
    line_start = text.rfind("\n", 0, index) + 1
    return inside.get(line_start, True)


def _mid_line_start(text: str, cut: int) -> int:
    """`cut`, moved back so the next part does not begin with what would open a fence there.

    (A part starts a new line: "see ```x```" cut before the backticks would open one.)
    """
    moved = cut
    while moved > 0 and text[moved - 1] != "\n" and _FENCE_START.match(text, moved):
        moved -= 1
    return moved if moved > 0 else cut


def _grapheme_start(text: str, cut: int) -> int:
    """`cut`, moved back so it does not separate a character from what attaches to it."""
    moved = cut
    while 0 < moved < len(text) and _attached(text[moved - 1], text[moved]):
        moved -= 1
    return moved if moved > 0 else cut


def _attached(before: str, after: str) -> bool:
    return (
        unicodedata.combining(after) != 0
        or unicodedata.category(after) in ("Mn", "Me")
        or after == _ZERO_WIDTH_JOINER
        or before == _ZERO_WIDTH_JOINER
        or "\ufe00" <= after <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= after <= "\U0001f3ff"  # skin tone modifiers
        or (before == "\r" and after == "\n")
        or ("\U0001f1e6" <= before <= "\U0001f1ff" and "\U0001f1e6" <= after <= "\U0001f1ff")
    )
