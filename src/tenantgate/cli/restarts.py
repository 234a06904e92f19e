"""When the supervisor of ``serve --workers N`` starts a dead worker again, and when it gives up.

A worker that dies is restarted after a delay that grows with its deaths within ``CRASH_WINDOW_SECONDS``
(``RESTART_DELAYS``). When it has died ``CRASH_LIMIT`` times within the window: if another worker serves (and
is not crash-looping itself), the failing one is restarted every ``RESTART_DELAYS[-1]`` seconds with an error
each time, as a single server keeps serving its last valid policies while the files on disk are invalid;
otherwise everything stops with exit code 1. This module counts, decides and says why (the log; stderr too
when it gives up); the supervisor forks and stops.
"""

from __future__ import annotations

import logging
import sys
from collections import deque

from tenantgate.cli.children import describe

log = logging.getLogger("tenantgate.supervisor")

CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds before a restart, by the worker's deaths within the window


def recent(deaths: deque[float], now: float) -> int:
    """How many of ``deaths`` fall within the crash window (older ones are dropped)."""
    while deaths and deaths[0] < now - CRASH_WINDOW_SECONDS:
        deaths.popleft()
    return len(deaths)


def crash_looping(deaths: deque[float], now: float) -> bool:
    """True when ``deaths`` reached the crash limit within the window."""
    return recent(deaths, now) >= CRASH_LIMIT


def restart_delay(index: int, pid: int, code: int, serving: bool, deaths: int, healthy: int,
                  workers: int) -> float | None:
    """Seconds before worker ``index`` (pid ``pid``, exit ``code``; ``serving`` when it died after it served)
    is started again, now that it died ``deaths`` times within the window and ``healthy`` of the ``workers``
    others serve without crash-looping; None when everything must stop. Logs the decision."""
    how = describe(code)
    if deaths < CRASH_LIMIT:
        delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS)) - 1]
        log.warning("worker %d (pid %d) %s; restarting it in %.1f s", index, pid, how, delay)
    elif healthy:
        # The others serve their last valid state (a single server would too): an outage helps nobody.
        delay = RESTART_DELAYS[-1]
        own_error = " (see its own error above)" if code > 0 else ""
        log.error("worker %d (pid %d) %s %s%s, %d times within %.0f s; %d of %d workers still serve, so it "
                  "keeps being restarted every %.1f s until it starts", index, pid, how,
                  "while serving" if serving else "before serving", own_error, deaths,
                  CRASH_WINDOW_SECONDS, healthy, workers, delay)
    else:
        message = (f"worker {index} died {deaths} times within {CRASH_WINDOW_SECONDS:.0f} s "
                   f"(last: {how}) and no other worker serves; stopping all workers")
        log.error(message)
        print(f"tenantgate: {message}", file=sys.stderr, flush=True)
        return None
    return delay
