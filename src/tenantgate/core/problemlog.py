"""A problem that can happen once per request, logged so that its repetition cannot flood the log.

A client can cause some problems once per request (a refused token, a connection reset mid-answer), and some
outages meet every request (the audit log cannot be written). A line for each let one unauthenticated client
write a thousand lines a second, onto the disk that is often the full one. ``ProblemLog`` writes the first
occurrence in full, then, while the problem goes on, at most one line per interval counting the occurrences
since; metrics go on counting each one. Pure: stdlib ``logging`` and an injected clock, so the core may use
it (``DecisionPoint`` and ``BreakGlass`` do, on their ``Clock``) as well as the adapters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

SUMMARY_SECONDS = 60.0  # while a problem goes on: at most one line about it per this many seconds
MAX_CAUSES = 8  # distinct causes written in full within one interval; further ones are counted


class ProblemLog:
    """Lines about one recurring problem, at most one per ``interval`` seconds (``now()``, in seconds, is the
    clock), plus at most one per interval saying it has ended.

    - ``occurred(message, *args, cause=...)``: one occurrence. The first (and the first after ``interval``
      quiet seconds) is logged in full, saying that one line per interval will count the rest; later ones are
      counted, and the first occurrence ``interval`` seconds after the last line writes the count, with the
      latest message. ``cause`` (default: ``message``, the template) tells problems apart: the first
      occurrence of another cause within the interval is logged in full too (at most ``MAX_CAUSES`` per
      interval), so a cause a client can repeat at will cannot hide a different, real one behind its count
      (review finding).
    - ``summarize()``: writes the count not written yet, if any (for a timer, or at close).
    - ``ended(message)``: the problem is over (say, a write succeeded again): one line, with the count not
      written yet, when occurrences were logged since the last such line. Cheap when there were none, so a
      hot path may call it on every success; within ``interval`` of the last line that said so it waits for
      a later call (a problem that comes and goes cannot write two lines a request either).

    ``summary`` is a %-format of the count line taking (count, latest message); ``noun`` names the occurrences.
    Lines are ``level``; the ended line is ``min(level, WARNING)``. ``ongoing`` says whether occurrences were
    logged or counted since the last ended line. Thread-safe; never raises (what logging does with a failing
    handler aside)."""

    def __init__(self, log: logging.Logger, *, now: Callable[[], float], summary: str, noun: str,
                 level: int = logging.WARNING, interval: float = SUMMARY_SECONDS) -> None:
        self._log = log
        self._now = now
        self._summary = summary
        self._noun = noun
        self._level = level
        self._interval = interval
        self._lock = threading.Lock()
        self._logged_at: float | None = None  # when the last line about the problem was written
        self._ended_at: float | None = None  # when the last line saying it ended was written
        self._uncounted = 0  # occurrences since the last line
        self._latest = ""  # what the latest of them said
        self._causes: set[str] = set()  # causes written in full since the last line that started an interval
        self.ongoing = False  # an occurrence was logged or counted since the last ended line

    def occurred(self, message: str, *args: object, cause: str | None = None) -> None:
        text = message % args if args else message
        key = message if cause is None else cause
        with self._lock:
            now = self._now()
            self.ongoing = True
            if self._within_interval(self._logged_at, now):
                if key in self._causes or len(self._causes) >= MAX_CAUSES:
                    self._uncounted += 1
                    self._latest = text
                    return
                self._causes.add(key)  # another cause: its first occurrence in full, the interval unchanged
                count = 0
            else:
                self._logged_at = now
                self._causes = {key}
                count, self._uncounted = self._uncounted, 0
        if count:
            self._log.log(self._level, self._summary, count + 1, text)
        else:
            self._log.log(self._level, "%s; while this goes on, one line every %.0f s counts the %s", text,
                          self._interval, self._noun)

    def summarize(self) -> None:
        with self._lock:
            count, self._uncounted = self._uncounted, 0
            latest = self._latest
            if count:
                self._logged_at = self._now()
        if count:
            self._log.log(self._level, self._summary, count, latest)

    def due(self) -> float | None:
        """When (on ``now``'s clock) the count not written yet is due, or None when there is none."""
        with self._lock:
            if not self._uncounted:
                return None
            return (self._logged_at if self._logged_at is not None else self._now()) + self._interval

    def ended(self, message: str) -> None:
        if not self.ongoing:  # the hot path: nothing happened
            return
        with self._lock:
            now = self._now()
            if not self.ongoing or self._within_interval(self._ended_at, now):
                return
            self.ongoing = False
            self._ended_at = now
            count, self._uncounted = self._uncounted, 0
            latest = self._latest
        suffix = f" ({count} more {self._noun} since the last line; latest: {latest})" if count else ""
        self._log.log(min(self._level, logging.WARNING), "%s%s", message, suffix)

    def _within_interval(self, since: float | None, now: float) -> bool:
        # A clock stepped back (``now`` before ``since``) counts as a passed interval: one extra line at most.
        return since is not None and 0 <= now - since < self._interval
