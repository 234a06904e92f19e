"""The exit code a command settles on before it prints its answer.

A reader that leaves early (``tenantgate check ... | head -1``) makes the print raise ``BrokenPipeError``;
``main.guarded`` then exits with the settled code, so a DENY, failed tests, invalid policies, a tampered log
or an unhealthy server never turn into 0. Every command with such a verdict settles before it prints
anything that depends on it; a command without one (token mint, audit tail) exits 0, as before.
"""

from __future__ import annotations

_settled: list[int] = []


def settle(code: int) -> int:
    """Record ``code`` as this command's exit code (before printing the answer it stands for); returns it."""
    _settled[:] = [code]
    return code


def settled(default: int) -> int:
    """The settled exit code, or ``default`` when the command settled on none."""
    return _settled[0] if _settled else default
