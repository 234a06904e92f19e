"""Waiting for something a server does in the background, bounded in attempts (no timing assertions)."""

import time


def eventually(predicate, what: str, attempts: int = 200, interval: float = 0.05) -> None:
    """Return once ``predicate()`` is true; fail naming ``what`` after ``attempts`` tries."""
    for _ in range(attempts):
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"never happened: {what}")
