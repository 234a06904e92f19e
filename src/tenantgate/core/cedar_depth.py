"""How deeply Cedar input nests, measured before cedarpy reads it: policy text, schema text, entity parents.

cedarpy's parser, validator, formatter and JSON conversion recurse on the native stack without a limit, so
deeply nested policy or schema text kills the whole process with SIGSEGV: no exception, no log line. Measured
with cedarpy 4.12.2 (8 MiB stack; every entry point, ``PolicySet.from_str``, ``policies_to_json_str``,
``validate_policies``, ``format_policies``, ``is_authorized`` and ``Schema.from_str``, within a few levels):
about 660 nested ``(``, ``[`` or ``{``, 870 nested function calls, 4,390 nested ``if``-``then``-``else``,
16,350 operators in one chain (``a && a && ...``, ``||``, ``+``, ``*``, ``.a.a...``, ``["a"]["a"]...``,
``.contains(1).contains(1)...``: ``policies_to_json_str``), and in a schema about 1,670 nested
``Set<{...}>``, 2,180 nested records and 7,160 nested ``Set<...>``. ``e has a.b.c...`` is expanded into one test
per prefix, so its cost grows with the square of the path (4,000 names: 48 s and 7 GiB). Cedar itself refuses
more than four unary ``!`` or ``-`` in a row. Hierarchies recurse too, and their transitive closure grows with
the square of a chain: a schema chain of ``entity E0 in [E1]; entity E1 in [E2]; ...`` crashed at about 17,400
(10,000 took 26 s and 6 GiB), of ``action a0 in [a1]; ...`` between 10,000 (164 s, 20 GiB) and 20,000, and
an entity file whose parents form a chain at about 20,000 (5,000 took 9 s and 2.7 GiB).

The bounds here are an order of magnitude below those, and below what the compiler's other readers of a
policy's JSON form allow (Python's ``json`` recursion limit, ~1,000 levels; two JSON levels per expression
level). The worst case within them (63 brackets around a 190-operator chain, through every entry point) runs
on a 1 MiB thread stack and crashed on 768 KiB; threads get 8 MiB by default on glibc Linux. The scan uses
Cedar's tokens (``cedar_text``), so strings and comments never count. Pure: it knows brackets, ``if`` and
operators, nothing of Cedar's grammar, and ``deepest_chain`` walks a parent map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tenantgate.core.cedar_text import Statement, position, tokens

MAX_NESTING = 64  # open brackets, plus open `if`s, at any point of a statement (of a schema: brackets)
MAX_EXPRESSION_DEPTH = 256  # operators and brackets on the levels enclosing any point of an expression
MAX_HAS_PATH = 8  # names in `e has a.b.c`
MAX_SCHEMA_MEMBERSHIPS = 1000  # `in` clauses of a schema: no entity or action hierarchy is deeper
MAX_ENTITY_DEPTH = 256  # entities on a chain of parents within one entity file

_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")
# Everything that adds a level to the expression tree above its operands. Over-counting is safe (`in`, `is`,
# `has` cannot chain, but their operands can); keywords used as names only make the estimate larger.
# Cedar's operators by how tightly they bind, loosest first (its grammar: `if`, `||`, `&&`, relations, `+ -`,
# `*`, unary, member access). A `-` is taken as binary and `then`/`else` as `if`'s own operators: both can
# only make the estimate larger. Keywords used as names only make it larger too.
_TIERS = {"if": 0, "then": 0, "else": 0, "||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
          "in": 3, "has": 3, "like": 3, "is": 3, "+": 4, "-": 4, "*": 5, "!": 6, ".": 7}
_MEMBER_TIER = 7
_ATOM_TIER = 8
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


@dataclass(frozen=True, slots=True)
class DepthProblem:
    """Text nested beyond a bound: the file line and column of the token that crossed it, and why."""

    line: int
    column: int
    message: str


NESTING_MESSAGE = (f"nested more than {MAX_NESTING} levels deep (brackets `(`, `[`, `{{` and `if`-`then`-`else` "
                   "count); Cedar's parser could exhaust its stack on deeper text, so it is refused before Cedar "
                   "reads it")
EXPRESSION_MESSAGE = (f"an expression more than {MAX_EXPRESSION_DEPTH} levels deep (a run of `||`, `&&`, `+`, `.` "
                      "and the like is as deep as it has operators, brackets count too); Cedar could exhaust its "
                      "stack on deeper expressions, so it is refused before Cedar reads it: split a long `||` or "
                      "`&&` chain into several policies, or test membership in a set "
                      "(`[\"a\", \"b\"].contains(x)`)")
HAS_PATH_MESSAGE = (f"an attribute path of more than {MAX_HAS_PATH} names after `has` (Cedar expands "
                    "`e has a.b.c` into one test per prefix, so its cost grows with the square of the path)")
MEMBERSHIPS_MESSAGE = (f"the schema has more than {MAX_SCHEMA_MEMBERSHIPS} `in` clauses (entity and action "
                       "memberships); Cedar computes hierarchies recursively, with a cost that grows with the "
                       "square of a chain, so it is refused before Cedar reads it")
SCHEMA_MESSAGE = (f"the schema nests more than {MAX_NESTING} levels deep (`{{`, `[`, `(` and `<`); Cedar's schema "
                  "parser could exhaust its stack on deeper text, so it is refused before Cedar reads it")


def policy_depth_problem(statement: Statement) -> DepthProblem | None:
    """The first place where a policy statement nests beyond a bound, or None.

    Measured, with every string and comment left out: nesting (open brackets plus open ``if``\\ s, an ``if``
    staying open to the end of its bracket or list element) against ``MAX_NESTING``; an upper bound of the
    expression tree's height (at each point, the operators and brackets of the current list element of every
    enclosing level) against ``MAX_EXPRESSION_DEPTH``; the names after each ``has`` against ``MAX_HAS_PATH``.
    Unbalanced closers are ignored (Cedar reports them). Linear in the text; never calls Cedar.
    """
    found = _policy_scan(statement.text)
    if found is None:
        return None
    return DepthProblem(*position(statement, found[0]), found[1])


def _policy_scan(text: str) -> tuple[int, str] | None:
    # Per open bracket level: its _Level, the enclosing path length, and its open ifs.
    stack: list[tuple[_Level, int, int]] = []
    level, enclosing, ifs, nesting = _Level(), 0, 0, 0
    has_at, has_names, expect_name = -1, 0, False
    for offset, token in tokens(text):
        if has_at >= 0:
            if expect_name and token[0] in _NAME_START:
                has_names, expect_name = has_names + 1, False
                if has_names > MAX_HAS_PATH:
                    return has_at, HAS_PATH_MESSAGE
            elif token == "." and not expect_name:
                expect_name = True
            else:
                has_at = -1
        if token in _OPENERS:
            nesting += 1
            if nesting > MAX_NESTING:
                return offset, NESTING_MESSAGE
            # A bracket is a level above its contents, like a member access: a call or index chains
            # (`a[x][y]`, `.f(1).f(1)`) as `.` does; a parenthesis only over-counts by one.
            if stack:
                level.operator(_MEMBER_TIER)
            stack.append((level, enclosing, ifs))
            # INVARIANT: the bracket's contents sit at most this deep below the statement's root (a statement's
            # annotations, scope and conditions are siblings, each one level).
            enclosing += level.path() if len(stack) > 1 else 1
            level, ifs = _Level(), 0
            continue
        if token in _CLOSERS:
            if not stack:
                continue
            height = level.height()
            nesting -= 1 + ifs
            level, enclosing, ifs = stack.pop()
            level.atom = height  # the bracket's own level was counted when it opened
        elif token == ",":  # the next list element, argument or record field: a sibling, not a child
            level.next_sibling()
            nesting -= ifs
            ifs = 0
            continue
        else:
            tier = _TIERS.get(token)
            if tier is None:
                continue
            if token == "if":
                ifs += 1
                nesting += 1
                if nesting > MAX_NESTING:
                    return offset, NESTING_MESSAGE
            elif token == "has":
                has_at, has_names, expect_name = offset, 0, True
            level.operator(tier)
        # INVARIANT: bounds the height of every path through the tree seen so far.
        if enclosing + level.height() > MAX_EXPRESSION_DEPTH:
            return offset, EXPRESSION_MESSAGE
    return None


class _Level:
    """One bracket level of an expression, read token by token: an upper bound of its tree's height that
    follows Cedar's precedence, so `a && b || c && d || ...` is as high as its `||` run plus one `&&`, not
    the sum of all its operators (review finding: 60 ordinary `x has a && x.a == "v" ||` clauses were
    refused). A run of one tier's operators adds its count to the tallest of its operands."""

    __slots__ = ("atom", "best", "counts", "tops")

    def __init__(self) -> None:
        self.counts = [0] * _ATOM_TIER  # operators of the current run, per tier
        self.tops = [0] * _ATOM_TIER  # tallest operand of that run, per tier
        self.atom = 0  # height of the operand being read (a name or literal: 0; a bracket: its height)
        self.best = 0  # tallest finished sibling (list element, argument, record field)

    def operator(self, tier: int) -> None:
        operand = self._collapse(tier + 1)
        self.tops[tier] = max(self.tops[tier], operand)
        self.counts[tier] += 1
        for tighter in range(tier + 1, _ATOM_TIER):
            self.counts[tighter] = self.tops[tighter] = 0
        self.atom = 0

    def next_sibling(self) -> None:
        self.best = self.height()
        self.counts = [0] * _ATOM_TIER
        self.tops = [0] * _ATOM_TIER
        self.atom = 0

    def height(self) -> int:
        return max(self.best, self._collapse(0))

    def path(self) -> int:
        """At most how far below this level's root the operand being read sits."""
        return sum(self.counts)

    def _collapse(self, loosest: int) -> int:
        height = self.atom
        for tier in range(_ATOM_TIER - 1, loosest - 1, -1):
            height = max(self.tops[tier], height) + self.counts[tier]
        return height


def schema_depth_problem(text: str) -> DepthProblem | None:
    """The first place where Cedar schema ``text`` nests ``{``, ``[``, ``(`` or ``<`` more than ``MAX_NESTING``
    levels deep, or has more than ``MAX_SCHEMA_MEMBERSHIPS`` ``in`` clauses (strings and comments left out), or
    None. Never calls Cedar."""
    nesting = memberships = 0
    for offset, token in tokens(text):
        if token == "in":
            memberships += 1
            if memberships > MAX_SCHEMA_MEMBERSHIPS:
                return DepthProblem(*position(Statement(1, 1, text), offset), MEMBERSHIPS_MESSAGE)
        elif token in _OPENERS or token == "<":
            nesting += 1
            if nesting > MAX_NESTING:
                return DepthProblem(*position(Statement(1, 1, text), offset), SCHEMA_MESSAGE)
        elif (token in _CLOSERS or token == ">") and nesting:
            nesting -= 1
    return None


Node = TypeVar("Node")


def deepest_chain(parents: Mapping[Node, Sequence[Node]], limit: int = MAX_ENTITY_DEPTH) -> Node | None:
    """A node with more than ``limit`` nodes on its longest chain of parents (itself included), or None.

    Only nodes of ``parents`` count (a parent outside it ends the chain); a cycle is cut where the search
    meets it again (cycles are reported elsewhere). Iterative, linear in nodes and edges; never calls Cedar.
    """
    depth: dict[Node, int] = {}
    for start in parents:
        if start in depth:
            continue
        stack: list[tuple[Node, int]] = [(start, 0)]
        on_path: set[Node] = {start}
        while stack:
            node, index = stack[-1]
            upward = parents[node]
            if index < len(upward):
                stack[-1] = (node, index + 1)
                parent = upward[index]
                if parent in parents and parent not in depth and parent not in on_path:
                    stack.append((parent, 0))
                    on_path.add(parent)
                continue
            stack.pop()
            on_path.discard(node)
            depth[node] = 1 + max((depth.get(parent, 0) for parent in upward), default=0)
            if depth[node] > limit:
                return node
    return None
