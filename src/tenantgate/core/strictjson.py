"""Strict RFC 8259 JSON: refuses anything a lenient parser would let through.

Two spellings of one document (duplicate member names, non-standard constants) would let an attacker give
one signed token or one reviewed data file two meanings. Failures are ``ValueError``; callers map them onto
their own errors. Pure (stdlib ``json`` only), so the core and every adapter can share it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

MAX_JSON_DEPTH = 32
"""Deepest nesting of JSON arrays/objects accepted in tokens and key sets (the root object is depth 1)."""


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins (PyJWT: the last); a signed document must mean one thing.
        raise _DuplicateKey("duplicate member name")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse_strict_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse RFC 8259 JSON strictly; raise ``ValueError`` for anything a lenient parser would let through.

    Rejected: duplicate member names at any depth, ``NaN``/``Infinity``, numbers that overflow to infinity,
    integers too long to convert, nesting deeper than ``max_depth`` (without leaking ``RecursionError``),
    a byte-order mark, and strings holding lone surrogates (they cannot be re-encoded as UTF-8 downstream).
    The input is ``str`` on purpose: ``json.loads(bytes)`` would guess UTF-16/32 encodings.
    """
    if text.startswith("\ufeff"):
        raise ValueError("byte-order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err
    _check_shape(value, max_depth)
    return value


def _check_shape(value: Any, max_depth: int) -> None:
    # Iterative walk: a recursive one would itself be a recursion-depth attack surface.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Sequence[Any] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            _check_scalar(node)
            continue
        if depth > max_depth:
            raise ValueError("JSON nested too deeply")
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
            else:
                _check_scalar(item)


def _check_scalar(value: Any) -> None:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError("string holds a lone surrogate") from err
