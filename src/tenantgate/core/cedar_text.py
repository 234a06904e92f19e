"""Locate statements in Cedar policy text, so every message can say file:line.

cedarpy reports parse and validation problems without positions, but numbers policies positionally
(``policy0``, ``policy1``, ...) in the order they appear. Splitting the text into statements gives each
policy's line, and lets a parse error be pinned on the first statement that fails on its own.
Pure text processing: it knows Cedar's strings, ``//`` comments and line breaks, nothing else.
"""

from __future__ import annotations

import re
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
