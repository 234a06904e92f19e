"""YAML for policy test suites: JSON-like typing, every mapping and list carrying its lines, bounded in size and
depth. Problems (invalid YAML, duplicate keys, non-string keys, too large or too deep) are reported through a
``problem(line, message)`` callback with 1-based lines, so the suite reader can list them with its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

MAX_YAML_NODES = 200_000  # aliases can make a small file expand: bound what we build
MAX_YAML_DEPTH = 64

Problem = Callable[[int, str], None]



class LocatedMap(dict[str, Any]):
    """A YAML mapping that remembers its line and each key's line (1-based)."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list[Any]):
    """A YAML sequence that remembers its line and each item's line (1-based)."""

    line: int
    item_lines: list[int]


class _SuiteLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """YAML with JSON's plain scalars, not YAML 1.1's implicit typing: only ``true``/``false`` are booleans
    (``off``, ``yes``, ``on`` stay strings), only plain decimal integers without leading zeros are ints
    (``010``, ``1_000``, ``0x1F`` and sexagesimal ``1:20`` stay strings), floats are written as in JSON
    (``1.5``, ``2e3``), ``null``/``~``/nothing is null, and dates and times stay strings. ``<<`` merge keys
    work. Explicit tags (``!!int``) still apply. Composing stops past ``MAX_YAML_DEPTH`` levels: PyYAML's
    composer recurses per level, so a file of 500 nested ``[`` ended in ``RecursionError`` before ``_convert``
    could count the levels."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH + 1:  # _convert counts the same levels from 0
                raise _TooBig(self.peek_event().start_mark.line + 1, _too_big())  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _resolve_like_json(loader: type[Any]) -> None:
    loader.yaml_implicit_resolvers = {}  # its own table, not SafeLoader's YAML 1.1 one
    for tag, pattern, first in (
        ("tag:yaml.org,2002:bool", r"^(?:true|false)$", "tf"),
        ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
        ("tag:yaml.org,2002:float", r"^[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)$",
         "-+0123456789"),
        ("tag:yaml.org,2002:null", r"^(?:null|~|)$", ("n", "~", "")),
        ("tag:yaml.org,2002:merge", r"^<<$", "<"),
    ):
        loader.add_implicit_resolver(tag, re.compile(pattern), list(first))


_resolve_like_json(_SuiteLoader)


def compose(text: str, problem: Problem) -> list[Any]:
    """YAML documents as plain values, mappings and sequences carrying their lines (safe tags only)."""
    documents: list[Any] = []
    budget = [MAX_YAML_NODES]
    loader = None
    try:
        loader = _SuiteLoader(text)  # rejects non-printable characters right here
        while loader.check_node():
            documents.append(_convert(loader.get_node(), loader, problem, 0, budget))
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        problem(line, f"invalid YAML: character #x{err.character:04x} is not allowed")
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = getattr(err, "problem", None) or str(err)
        problem(line, f"invalid YAML: {what}")
    except _TooBig as err:
        problem(err.line, str(err))
    finally:
        if loader is not None:
            loader.dispose()
    return documents


class _TooBig(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _too_big() -> str:
    return f"document too large or too deep (limits: {MAX_YAML_NODES} values, {MAX_YAML_DEPTH} levels)"


def _convert(node: Any, loader: Any, problem: Problem, depth: int, budget: list[int]) -> Any:
    line = node.start_mark.line + 1
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_YAML_DEPTH:
        raise _TooBig(line, _too_big())
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    problem(key_node.start_mark.line + 1, f"duplicate key {key_node.value!r}")
                seen.add(key_node.value)
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor); explicit keys win
        mapping = LocatedMap()
        mapping.line, mapping.key_lines = line, {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                # Never constructed (nor shown): a list or mapping key built from aliases is outside the node
                # budget, and a 700-byte one expands to gigabytes (review finding).
                problem(key_node.start_mark.line + 1, "keys must be strings, not a list or mapping")
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                problem(key_node.start_mark.line + 1, f"keys must be strings, not {key!r} (quote it)")
                continue
            mapping[key] = _convert(value_node, loader, problem, depth + 1, budget)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping
    if isinstance(node, yaml.SequenceNode):
        sequence = LocatedList(_convert(item, loader, problem, depth + 1, budget) for item in node.value)
        sequence.line, sequence.item_lines = line, [item.start_mark.line + 1 for item in node.value]
        return sequence
    return loader.construct_object(node, deep=True)
