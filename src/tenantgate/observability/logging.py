"""JSON log lines on stderr. Records never carry raw tokens: nothing in TenantGate logs one."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tenantgate.core.problemlog import SUMMARY_SECONDS, ProblemLog

ACCEPT_FAILURE_SUMMARY_SECONDS = SUMMARY_SECONDS  # while accept() keeps failing: one line per this many seconds
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``worker`` (under ``serve --workers N``) tags every line with its index.
    A record logged with ``extra={"details": [...]}`` carries that list of strings as ``details``."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            line["worker"] = self._worker
        details = getattr(record, "details", None)
        if isinstance(details, (list, tuple)):
            line["details"] = [str(item) for item in details]
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


def configure(level: str, worker: int | None = None) -> None:
    """Send JSON lines at ``level`` to stderr (replacing earlier handlers of the root logger), tagged with
    ``worker`` when given."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc.aio logs "[_cygrpc] Loaded running loop" at debug for every call: noise that floods `debug`.
    grpc_aio = logging.getLogger("grpc._cython.cygrpc")
    grpc_aio.setLevel(max(root.level, logging.INFO))
    for earlier in [f for f in grpc_aio.filters if isinstance(f, EndedCallErrors)]:
        grpc_aio.removeFilter(earlier)
    grpc_aio.addFilter(EndedCallErrors())


class EndedCallErrors(logging.Filter):
    """On grpc.aio's logger: its ``ExecuteBatchError raised in core by servicer method`` error (with a
    traceback of gRPC's own frames) becomes a ``ProblemLog``: one ``warning`` line, then one a minute counting
    them. gRPC writes it when a handler answers a call the core has just ended (its deadline passed, or the
    client left, before the answer went out): a race the servicers narrow (``rpc.status.stop_if_late``) but
    cannot close without dropping late answers a caller would still take. Review finding: 2-9 tracebacks per
    1,000 BatchChecks with short deadlines. Every other record passes."""

    MESSAGE = "ExecuteBatchError raised in core by servicer method"

    def __init__(self, interval: float = SUMMARY_SECONDS, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self._problems = ProblemLog(logger or logging.getLogger("tenantgate.rpc"), now=time.monotonic,
                                    interval=interval, noun="calls",
                                    summary="%d more answers were not sent since the last line, their calls "
                                            "having ended (latest: %s)")

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(self.MESSAGE)):
            return True
        method = record.msg[len(self.MESSAGE):].strip(" []")
        self._problems.occurred("the answer to a %s call was not sent: the call had ended (its deadline passed "
                                "or the client left)", method or "gRPC")
        return False


class AcceptFailureLog:
    """An asyncio exception handler: ``socket.accept()`` failing for want of descriptors or memory (EMFILE,
    ENFILE, ENOBUFS, ENOMEM) is one ``error`` line, then, while it goes on, at most one line per ``interval``
    seconds counting the failures since (a ``ProblemLog``, its count written by a timer on the loop);
    anything else goes to the handler that was there before (asyncio's default: an error with its traceback).
    Review finding: asyncio logs every failed accept with a traceback and retries up to the listen backlog on
    each wake-up; 1,100 idle connections under a 1,024 descriptor limit wrote 2,560 tracebacks (1.3 MB) in 7 s.

    ``install(loop)`` takes over the loop's handler; ``close()`` logs what is still uncounted and gives the
    handler back."""

    def __init__(self, interval: float = ACCEPT_FAILURE_SUMMARY_SECONDS, logger: logging.Logger | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None
        self._problems = ProblemLog(logger or logging.getLogger("tenantgate.accept"), now=time.monotonic,
                                    level=logging.ERROR, interval=interval, noun="failures",
                                    summary="accepting connections failed %d more times since the last line "
                                            "(latest: %s)")
        self._summary: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
        self._summarize()
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous)
            self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not (str(context.get("message", "")).startswith("socket.accept()") and isinstance(error, OSError)
                and error.errno in _OUT_OF_RESOURCES):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._problems.occurred("cannot accept a connection on %s: %s", _address(context.get("socket")), error)
        due = self._problems.due()
        if due is not None and self._summary is None:
            self._summary = loop.call_later(max(due - time.monotonic(), 0.0), self._summarize)

    def _summarize(self) -> None:
        self._summary = None
        self._problems.summarize()


def _address(sock: Any) -> str:
    """``HOST:PORT`` of the listening socket asyncio names in an exception context (or ``?``)."""
    try:
        host, port = sock.getsockname()[:2]
    except (AttributeError, OSError, TypeError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
