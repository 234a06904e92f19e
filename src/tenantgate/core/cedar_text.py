"""Locate statements in Cedar policy text, so every message can say file:line.

cedarpy reports parse and validation problems without positions, but numbers policies positionally
(``policy0``, ``policy1``, ...) in the order they appear. Splitting the text into statements gives each
policy's line, and lets a parse error be pinned on the first statement that fails on its own.
Pure text processing: it knows Cedar's strings and ``//`` comments, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statement:
    """One ``...;`` statement: 1-based line and column of its first character, and its text."""

    line: int
    column: int
    text: str


def split_statements(text: str) -> list[Statement]:
    """Split policy text into statements ending at a top-level ``;``.

    A trailing fragment without ``;`` is returned as a statement too (it is a parse error, and needs a line).
    """
    statements: list[Statement] = []
    i, n = 0, len(text)
    line, col = 1, 1
    start: tuple[int, int, int] | None = None  # (offset, line, column)

    def advance(ch: str) -> None:
        nonlocal line, col
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1

    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                advance(text[i])
                i += 1
            continue
        if ch.isspace():
            advance(ch)
            i += 1
            continue
        if start is None:
            start = (i, line, col)
        if ch == '"':
            advance(ch)
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    advance(text[i])
                    i += 1
                advance(text[i])
                i += 1
            if i < n:
                advance(text[i])
                i += 1
            continue
        advance(ch)
        i += 1
        if ch == ";":
            statements.append(Statement(start[1], start[2], text[start[0]:i]))
            start = None
    if start is not None:
        statements.append(Statement(start[1], start[2], text[start[0]:]))
    return statements
