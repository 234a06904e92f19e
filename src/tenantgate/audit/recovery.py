"""Recovery at open or resync: set aside an end of the log that is not where the chain was known to end (a
torn tail after a crash; records cut off or rewritten), and move a pre-chain log out of the way.

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

from tenantgate.audit.files import ChainHead, TailScan, find_record, torn_path, unchained_path
from tenantgate.core.model import rfc3339

log = logging.getLogger("tenantgate.audit")

RECOVERED = "audit_recovered"


@dataclass(frozen=True, slots=True)
class Recovery:
    """The end of a live file (open as ``fd``, locked) that is not where its chain was known to end.

    Bytes ``cut``..``size`` are set aside (none when equal) and the chain continues after ``resume``. ``known``
    is the head the writer knew of (its own last record in this very file, or the head file, whichever is
    further; None: neither). ``reason``: ``torn_tail`` (torn or corrupt bytes after the last intact record),
    ``truncated`` (the log ends before ``known``), ``head_mismatch`` (the record numbered ``known.seq`` is
    another one: it and everything after it are set aside).
    """

    path: Path
    fd: int
    cut: int
    size: int
    resume: ChainHead
    known: ChainHead | None
    reason: str = "torn_tail"


def check_end(path: Path, fd: int, scan: TailScan, known: ChainHead | None, ours: ChainHead | None) -> Recovery:
    """What to set aside at the end of the live file ``fd`` (locked), whose tail ``scan`` found an intact last
    record, given the head the chain is ``known`` to have reached and ``ours`` (the writer's own last record,
    when it went to this very file). Only reads (``find_record``); raises ``OSError``.

    - The log ends before ``known``: records were cut off the end (``truncated``; ``torn_tail`` when a torn
      tail follows): the recovery record names them (verify: ``lost``).
    - The record numbered ``known.seq`` (when the log ends there) or ``ours.seq`` (when it grew past it) is
      another one: the end was rewritten (``head_mismatch``). That record and everything after it are set
      aside and the chain continues after the record before it; the recovery record names it as lost.
    - Otherwise (it ends at ``known``, or grew past the head file: another writer, or one killed before its
      head update) only a torn tail, if any (``cut < size``).

    Without this the next record was chained onto a cut or rewritten end, after which the chain and the head
    file agreed again (review finding: one more decision laundered a log cut from 607 to 100 records).
    """
    last = scan.last
    if last is None:
        raise ValueError("check_end needs a tail scan that found a record")
    found_end = ChainHead(last.seq, last.claimed_hash)
    torn = Recovery(path, fd, scan.intact_end, scan.size, found_end, known)
    if known is None:
        return torn
    if last.seq < known.seq:
        return torn if scan.intact_end < scan.size else \
            Recovery(path, fd, scan.size, scan.size, found_end, known, "truncated")
    # Records past the head file are no evidence (other writers, a crash before the head update); past our own
    # record in this file, that record must still be there as we wrote it.
    for check in (ours if ours is not None and ours.seq < last.seq else None,
                  known if known.seq == last.seq else None):
        if check is None or check == found_end:
            continue
        found = find_record(fd, scan.intact_end, check.seq)
        if found is not None and found[1].claimed_hash != check.hash:
            offset, other = found
            return Recovery(path, fd, offset, scan.size, ChainHead(other.seq - 1, other.prev_hash), check,
                            "head_mismatch")
    return torn


def set_aside_tail(recovery: Recovery, now: float, durable: bool) -> dict[str, Any]:
    """Copy the bytes from ``cut`` to ``<log>.torn-<UTC>``, then truncate them away; returns the fields of the
    ``audit_recovered`` record that says so (and, in ``head_seq``/``head_hash``, what the chain had reached:
    verify reports ``resumed_seq + 1 .. head_seq`` as lost).

    The copy is written (and fsynced when ``durable``) before the truncation, so the evidence is never lost.
    Nothing is copied, truncated or created when there are no bytes to set aside (``truncated``). Raises
    ``OSError`` (nothing is truncated if the copy fails).
    """
    r = recovery
    data = os.pread(r.fd, r.size - r.cut, r.cut) if r.size > r.cut else b""
    evidence = ""
    if data:
        name, fd = _exclusive_file(lambda stamp: torn_path(r.path, stamp), now)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.ftruncate(r.fd, r.cut)
        if durable:
            os.fsync(r.fd)
        evidence = name.name
    head_seq, head_hash = (r.known.seq, r.known.hash) if r.known is not None else (-1, "")
    lost = f"; {head_seq - r.resume.seq} written record(s) are lost" if head_seq > r.resume.seq else ""
    if r.reason == "truncated":
        log.warning("audit log %s ends at seq %d but seq %d was written: records were cut off the end (or lost in "
                    "a power failure in flush mode)%s",
                    r.path, r.resume.seq, head_seq, lost)
    elif r.reason == "head_mismatch":
        log.warning("audit log %s: record %d is not the one written (the end of the log was rewritten): %d bytes "
                    "from it on moved to %s, the chain resumes after seq %d%s", r.path, head_seq, len(data),
                    evidence, r.resume.seq, lost)
    else:
        log.warning("audit log %s: %d torn or corrupt bytes after record %d moved to %s%s", r.path, len(data),
                    r.resume.seq, evidence, lost)
    return {
        "record_type": RECOVERED,
        "time": rfc3339(now),
        "reason": r.reason,
        "file": r.path.name,
        "set_aside_bytes": len(data),
        "evidence": evidence,
        "resumed_seq": r.resume.seq,
        "head_seq": head_seq,
        "head_hash": head_hash,
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
        "head_hash": "",
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
