"""Compatibility home of ``JsonlAuditSink`` and ``encode_event`` (the sink now lives in ``sink.py``).

``encode_event`` is the plain, unchained encoding of one record: compact, ASCII-only JSON (newlines and
separators in values are escaped) plus a newline. The chained file format is described in ``chain.py``.
"""

from __future__ import annotations

import json

from tenantgate.audit.sink import JsonlAuditSink
from tenantgate.core.ports import AuditRecord


def encode_event(event: AuditRecord) -> bytes:
    """One line of compact, ASCII-only JSON (newlines and separators in values are escaped)."""
    return (json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


__all__ = ["JsonlAuditSink", "encode_event"]
