"""Audit sinks: where every decision's record is written, hash-chained, before its answer leaves.

``JsonlAuditSink`` writes the chained log; ``verify_log`` / ``verify_files`` check it; ``TeeAuditSink``
copies records to a secondary sink (e.g. ``StreamAuditSink`` on stdout) that can never fail a decision.
The on-disk format is documented in ``docs/audit.md`` and ``chain.py``.
"""

from tenantgate.audit.chain import GENESIS_HASH
from tenantgate.audit.jsonl import JsonlAuditSink, encode_event
from tenantgate.audit.tee import StreamAuditSink, TeeAuditSink
from tenantgate.audit.verify import Finding, VerifyReport, verify_files, verify_log
from tenantgate.audit.writer import AuditStats

__all__ = ["GENESIS_HASH", "AuditStats", "Finding", "JsonlAuditSink", "StreamAuditSink", "TeeAuditSink",
           "VerifyReport", "encode_event", "verify_files", "verify_log"]
