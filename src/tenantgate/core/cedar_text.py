"""Locate statements in Cedar policy text, so every message can say file:line.

cedarpy reports parse and validation problems without positions, but numbers policies positionally
(``policy0``, ``policy1``, ...) in the order they appear. Splitting the text into statements gives each
policy's line, and lets a parse error be pinned on the first statement that fails on its own.
Pure text processing: it knows Cedar's strings and ``//`` comments, nothing else.
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
# runs of anything else are skipped in one step.
_TOKENS = re.compile(r'//[^\n]*|"(?:[^"\\]|\\.)*"?|;|[^\s/";]+|/', re.S)


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
    """Line numbers of increasing offsets, counting each newline once."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def statement(self, start: int, end: int) -> Statement:
        self.line += self.text.count("\n", self.pos, start)
        self.pos = start
        column = start - (self.text.rfind("\n", 0, start) + 1) + 1
        return Statement(self.line, column, self.text[start:end])
