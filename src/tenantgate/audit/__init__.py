"""Audit sinks: where every decision's record is written before its answer leaves."""

from tenantgate.audit.jsonl import JsonlAuditSink, encode_event

__all__ = ["JsonlAuditSink", "encode_event"]
