"""Crash recovery at open: set a torn tail aside as evidence, and move a pre-chain log out of the way.

Both return the fields of an ``audit_recovered`` record that the sink writes as the next record of the
chain, so the recovery itself is part of the tamper-evident history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenantgate.audit.files import ChainHead, torn_path, unchained_path
from tenantgate.core.model import rfc3339

log = logging.getLogger("tenantgate.audit")

RECOVERED = "audit_recovered"


@dataclass(frozen=True, slots=True)
class Recovery:
    """A live file (open as ``fd``, locked) whose bytes ``intact_end``..``size`` follow its last intact record.

    ``resume`` is where the chain continues; ``head_seq`` what the head file said (-1: no head file).
    """

    path: Path
    fd: int
    intact_end: int
    size: int
    resume: ChainHead
    head_seq: int


def set_aside_tail(recovery: Recovery, now: float, durable: bool) -> dict[str, Any]:
    """Copy the bytes after the last intact record to ``<log>.torn-<UTC>``, then truncate them away.

    The copy is written (and fsynced when ``durable``) before the truncation, so the evidence is never lost.
    Raises ``OSError`` (nothing is truncated if the copy fails).
    """
    r = recovery
    data = os.pread(r.fd, r.size - r.intact_end, r.intact_end)
    evidence = _exclusive_file(lambda stamp: torn_path(r.path, stamp), now)
    try:
        _write_all(evidence[1], data)
        if durable:
            os.fsync(evidence[1])
    finally:
        os.close(evidence[1])
    os.ftruncate(r.fd, r.intact_end)
    if durable:
        os.fsync(r.fd)
    lost = r.head_seq - r.resume.seq if r.head_seq > r.resume.seq else 0
    log.warning("audit log %s: %d torn or corrupt bytes after record %d moved to %s%s", r.path, len(data),
                r.resume.seq, evidence[0].name,
                f"; the head file names {lost} more record(s), which are lost" if lost else "")
    return {
        "record_type": RECOVERED,
        "time": rfc3339(now),
        "reason": "torn_tail",
        "file": r.path.name,
        "set_aside_bytes": len(data),
        "evidence": evidence[0].name,
        "resumed_seq": r.resume.seq,
        "head_seq": r.head_seq,
    }


def move_unchained(path: Path, now: float, durable: bool) -> dict[str, Any]:
    """Rename a log written before the hash chain existed to ``<log>.unchained-<UTC>``. Raises ``OSError``."""
    target = _free_name(lambda stamp: unchained_path(path, stamp), now)
    os.rename(path, target)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    log.warning("audit log %s has no hash chain (written by an older version): moved to %s; a new chain starts",
                path, target.name)
    return {
        "record_type": RECOVERED,
        "time": rfc3339(now),
        "reason": "unchained_log_moved",
        "file": path.name,
        "set_aside_bytes": os.stat(target).st_size,
        "evidence": target.name,
        "resumed_seq": 0,
        "head_seq": -1,
    }


def _stamp(now: float, attempt: int) -> str:
    base = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return base if attempt == 0 else f"{base}-{attempt}"


def _exclusive_file(name: Callable[[str], Path], now: float) -> tuple[Path, int]:
    for attempt in range(100):
        candidate = name(_stamp(now, attempt))
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free evidence file name next to {name(_stamp(now, 0))}")


def _free_name(name: Callable[[str], Path], now: float) -> Path:
    for attempt in range(100):
        candidate = name(_stamp(now, attempt))
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name next to {name(_stamp(now, 0))}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
