"""One worker of ``serve --workers N``, in the process the supervisor forked: its own app and gRPC server.

Nothing of gRPC exists before this runs (the supervisor never imports it); the worker imports and builds
everything itself, writes its own audit chain (worker K: ``audit-wK.jsonl``, worker 0: ``audit.path``) and
keeps its metrics in the supervisor's multiprocess directory.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tenantgate.config import Settings
from tenantgate.errors import ConfigError

if TYPE_CHECKING:
    from tenantgate.app import App

log = logging.getLogger("tenantgate.worker")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


def run(settings: Settings, index: int, supervisor_pid: int, on_started: Callable[[App, int], None]) -> int:
    """Serve as worker ``index`` until SIGTERM/SIGINT, then drain; return 0. ``on_started(app, port)`` once
    it serves. Raises what ``app.build`` and ``app.serve`` raise (``ConfigError``, ``PolicyError``, ...):
    ``log_failure`` reports them in the supervisor's stream of JSON log lines."""
    die_with(supervisor_pid)
    from tenantgate import app as application
    from tenantgate.observability.logging import configure

    configure(settings.log.level, worker=index)
    built = application.build(settings, worker=index)
    asyncio.run(application.serve(built, lambda port: on_started(built, port)))
    return 0


def log_failure(message: str, details: Sequence[str]) -> None:
    """Why this worker could not go on, as one JSON log line at error level: ``message``, and ``details``
    (e.g. each invalid policy's ``file:line:column: message``) as a list. Under a supervisor, stderr is a
    stream of JSON lines; plain text would break a reader of it."""
    log.error(message, extra={"details": list(details)} if details else None)


def die_with(supervisor_pid: int) -> None:
    """Get SIGTERM (a worker drains, the /metrics process exits) when the supervisor dies, even by SIGKILL:
    no child outlives it. Raises ``ConfigError`` when the supervisor is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no parent-death signal: watch for being adopted by another process instead
        threading.Thread(target=_watch_parent, args=(supervisor_pid,), name="tenantgate-parent-watch",
                         daemon=True).start()
    if os.getppid() != supervisor_pid:  # it died before the line above took effect
        raise ConfigError("the supervisor exited while this process started")


def _watch_parent(supervisor_pid: int) -> None:
    while os.getppid() == supervisor_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
