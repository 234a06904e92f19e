"""JSON log lines on stderr. Records never carry raw tokens: nothing in TenantGate logs one."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


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
    logging.getLogger("grpc._cython.cygrpc").setLevel(max(root.level, logging.INFO))
