"""Locate statements in Cedar policy text, so every message can say file:line.

cedarpy reports parse and validation problems without positions, but numbers policies positionally
(``policy0``, ``policy1``, ...) in the order they appear. Splitting the text into statements gives each
policy's line, and lets a parse error be pinned on the first statement that fails on its own; splitting a
statement into tokens lets the compiler find the token the parser stopped at (``token_ends``, ``position``).
Pure text processing: it knows Cedar's strings, ``//`` comments, line breaks and token shapes, nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statement:
    """One ``...;`` statement: 1-based line and column of its first character, and its text."""

    line: int
    column: int
    text: str


# Tokens that matter for finding statement ends: comments, strings (possibly unterminated), semicolons;
# runs of anything else are skipped in one step. Cedar ends a `//` comment at `\r` as well as `\n`: a
# comment that ran on to the next `\n` here would swallow a policy Cedar parses (and validates), leaving it
# out of, or merging it wrongly into, the tenant partition text built from these statements.
_TOKENS = re.compile(r'//[^\r\n]*|"(?:[^"\\]|\\.)*"?|;|[^\s/";]+|/', re.S)
# A line break as Cedar (and Python's universal newlines) counts one: `\r\n`, a lone `\r`, or `\n`.
_LINE_BREAK = re.compile(r"\r\n?|\n")
# Cedar's tokens, as far as finding where one ends: comments (skipped), strings (possibly unterminated),
# names, numbers, two-character operators, then any other single character.
_LEXEMES = re.compile(r'//[^\r\n]*|"(?:[^"\\]|\\.)*"?|[A-Za-z_][A-Za-z0-9_]*|[0-9]+|==|!=|<=|>=|&&|\|\||::|\S',
                      re.S)
# `@id("...")` among a statement's leading annotations.
_ANNOTATION = re.compile(r'\s*(?://[^\r\n]*\s*)*@\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(\s*"((?:[^"\\]|\\.)*)"\s*\))?')


def split_statements(text: str) -> list[Statement]:
    """Split policy text into statements ending at a top-level ``;``.

    A trailing fragment without ``;`` is returned as a statement too (it is a parse error, and needs a line).
    """
    statements: list[Statement] = []
    start = -1
    lines = _LineCounter(text)
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token.startswith("//"):
            continue
        if start < 0:
            start = match.start()
        if token == ";":
            statements.append(lines.statement(start, match.end()))
            start = -1
    if start >= 0:
        statements.append(lines.statement(start, len(text)))
    return statements


class _LineCounter:
    r"""Line numbers of increasing offsets, counting each line break (``\r\n``, ``\r`` or ``\n``) once.

    A statement starts at a token, never between the ``\r`` and ``\n`` of one break, so counting from
    one start to the next never splits a ``\r\n``.
    """

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def statement(self, start: int, end: int) -> Statement:
        self.line += sum(1 for _ in _LINE_BREAK.finditer(self.text, self.pos, start))
        self.pos = start
        line_start = max(self.text.rfind("\n", 0, start), self.text.rfind("\r", 0, start)) + 1
        return Statement(self.line, start - line_start + 1, self.text[start:end])


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of each token of ``text`` (comments left out), in order."""
    return [m.span() for m in _LEXEMES.finditer(text) if not m.group().startswith("//")]


def tokens(text: str) -> Iterator[tuple[int, str]]:
    """``(start offset, token)`` of each token of ``text`` (comments left out; a string, even unterminated,
    is one token), in order."""
    for match in _LEXEMES.finditer(text):
        token = match.group()
        if not token.startswith("//"):
            yield match.start(), token


def position(statement: Statement, offset: int) -> tuple[int, int]:
    """1-based ``(line, column)`` in the file of ``offset`` within ``statement.text``."""
    breaks = list(_LINE_BREAK.finditer(statement.text, 0, offset))
    if not breaks:
        return statement.line, statement.column + offset
    return statement.line + len(breaks), offset - breaks[-1].end() + 1


def annotated_id(text: str) -> str:
    """The ``@id("...")`` of a statement's leading annotations, as written (escapes not resolved); "" if none."""
    pos = 0
    while (match := _ANNOTATION.match(text, pos)) is not None:
        if match.group(1) == "id" and match.group(2) is not None:
            return match.group(2)
        pos = match.end()
    return ""


def parse_error_position(statement: Statement, message: str, error_of: Callable[[str], str]) -> tuple[int, int]:
    """File line and column of the token a parse error of ``statement`` is about.

    cedarpy's messages carry no position (``unexpected token `}```). ``error_of(text)`` (Cedar's parse error
    for ``text``, "" when it parses) is asked about prefixes of the statement cut at token ends, with a ``;``
    appended: while a prefix can still be completed, the parser stumbles on that ``;``; from the offending
    token on, it reports the error itself (Cedar's parser reports an unexpected token only once it reaches a
    ``;``, hence the one appended). A binary search finds the shortest such prefix: about log2(tokens) parses.
    Errors found after parsing (an unknown variable, an empty condition, ...) stay at the statement start.
    """
    spans = token_spans(statement.text)
    start = (statement.line, statement.column)
    if not spans:
        return start
    if message.startswith(_END_OF_INPUT):
        return position(statement, spans[-1][1])  # the statement ends too early: just past its last token
    if message == "unexpected token `;`":
        return position(statement, spans[-1][0])  # split_statements ends every statement at its only `;`
    if not message.startswith(("unexpected token", "invalid token")):
        return start

    def fails_as_reported(count: int) -> bool:
        return error_of(statement.text[:spans[count - 1][1]] + "\n;") == message

    low, high = 1, len(spans)  # the whole statement fails so; find the fewest tokens that already do
    if not fails_as_reported(high):
        return start
    while low < high:
        middle = (low + high) // 2
        if fails_as_reported(middle):
            high = middle
        else:
            low = middle + 1
    return position(statement, spans[low - 1][0])


_END_OF_INPUT = "unexpected end of input"


def escape_unprintable(text: str) -> str:
    """``text`` (a policy id, or a message quoting policy text) safe to print on a terminal: non-printable
    characters as escapes (``\\x1b``, ``\\u200b``); printable text unchanged."""
    if not first_unprintable(text):
        return text
    return "".join(ascii(ch)[1:-1] if _unprintable(ch) else ch for ch in text)


def first_unprintable(text: str) -> str:
    """The first non-printable character of ``text`` as ``U+XXXX`` ("" when none): Unicode's C* categories
    (controls such as ESC and CR, format characters, surrogates, private use, unassigned) and the line and
    paragraph separators."""
    found = next((ch for ch in text if _unprintable(ch)), None)
    return "" if found is None else f"U+{ord(found):04X}"


def _unprintable(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category.startswith("C") or category in ("Zl", "Zp")
