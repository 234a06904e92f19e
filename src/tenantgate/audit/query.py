"""Quick investigations over audit logs: ``tail`` the last records and ``query`` with filters.

Both yield the stored lines unchanged (JSON lines, chain fields included), so their output can be piped to
``jq`` or verified again. They read only; they never check the chain (that is ``verify``). They, and
``verify``, open log files with ``open_regular``: a FIFO or device planted in a log's place is refused, not
waited on. Given a ``ChainSnapshot``'s files (``snapshot.snapshot_chain``) they read the chain as it was at one
instant, however it rotates meanwhile (``open_chain_file``, ``chain_lines``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from tenantgate import paths
from tenantgate.audit.chain import MalformedRecord, parse_plain
from tenantgate.audit.checkpoint import CHECKPOINT
from tenantgate.audit.recovery import RECOVERED
from tenantgate.audit.snapshot import ChainFile

# Decisions: principal_tenant, resource_tenant. Grant events: the tenant a grant opens (target_tenant), the tenant of
# whoever acted (actor_tenant) and of the operator it is for (operator_tenant), so a tenant's query finds the
# grant steps its people took, the refused ones included.
TENANT_FIELDS = ("principal_tenant", "resource_tenant", "target_tenant", "actor_tenant", "operator_tenant")
# Every record_type the sink writes (README, "Audit records"): a query for any other finds nothing.
RECORD_TYPES = ("decision", "grant_event", CHECKPOINT, RECOVERED, "audit_probe")
_BLOCK = 64 * 1024
# The longest line read: a record the sink writes is a few KiB (request strings are clipped to 256 characters),
# and recovery looks for one in the last 1 MiB (``files.TAIL_WINDOW``). A longer line is skipped unread.
MAX_LINE_BYTES = 1 << 20


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset; a date alone means midnight UTC). Raises ``ValueError``."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records a query keeps; empty fields match everything.

    ``tenant`` matches ``principal_tenant``, ``resource_tenant`` or (grant events) ``target_tenant``,
    ``actor_tenant`` or ``operator_tenant``.
    ``decision``/``reason`` only match decision records. ``since`` is inclusive, ``until`` exclusive;
    a record without a readable ``time`` never matches a time bound.
    """

    tenant: str = ""
    decision: str = ""
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None
    record_types: frozenset[str] = frozenset()

    def matches(self, record: dict[str, Any]) -> bool:
        if self.record_types and record.get("record_type") not in self.record_types:
            return False
        if self.tenant and not any(record.get(name) == self.tenant for name in TENANT_FIELDS):
            return False
        if self.decision and str(record.get("decision", "")).upper() != self.decision.upper():
            return False
        if self.reason and record.get("reason") != self.reason:
            return False
        if self.since is not None or self.until is not None:
            when = _record_time(record)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary mode, if it is a regular file (a symlink to one is followed).

    Raises ``NotRegularFile`` (an ``OSError``: ``strerror`` says what it is) for anything else, without
    blocking (review finding: a FIFO named ``audit.jsonl.7`` hung ``audit verify``, ``query`` and ``tail``),
    ``OSError`` when it cannot be opened (``paths.open_regular``)."""
    return os.fdopen(paths.open_regular(path, follow_symlinks=True), "rb")


def open_chain_file(file: ChainFile | Path) -> BinaryIO:
    """A stream on ``file`` from its start: a name is opened (``open_regular``), a snapshot's descriptor is
    duplicated (the snapshot keeps its own). Read it with ``chain_lines`` to stop at the snapshot's end. Raises
    ``NotRegularFile`` for a file that is not a regular one, ``OSError``."""
    if isinstance(file, Path):
        return open_regular(file)
    if file.refused is not None:
        raise file.refused
    if file.fd is None:
        return open_regular(file.path)
    stream = os.fdopen(os.dup(file.fd), "rb")
    stream.seek(0)
    return stream


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line longer than ``MAX_LINE_BYTES`` (``length`` bytes, newline included; ``complete``: it has one), which
    no record the sink writes is: skipped unread, so a planted gigabyte line costs no memory."""

    length: int
    complete: bool


def chain_lines(stream: BinaryIO, end: int | None) -> Iterator[bytes | Oversized]:
    """The lines of ``stream`` (with their newline; a last one without) up to offset ``end`` (None: to its end).

    A line that runs past ``end`` was being written when the snapshot was taken (the file has grown since): it
    is not part of the snapshot and not yielded, unlike a last line that just lacks its newline (torn). A line
    longer than ``MAX_LINE_BYTES`` is read in blocks and dropped, and yielded as ``Oversized`` (hostile review:
    a 3 GB line, a sparse file of NULs, was read whole and verify and query died of ``MemoryError``).
    """
    remaining = end
    while remaining is None or remaining > 0:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line: bytes | Oversized = raw
        length = len(raw)
        if length > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            complete = False
            while remaining is None or length <= remaining:
                block = stream.readline(_BLOCK)
                if not block:
                    break
                length += len(block)
                if block.endswith(b"\n"):
                    complete = True
                    break
            line = Oversized(length, complete)
        if remaining is not None:
            if length > remaining:
                return
            remaining -= length
        yield line


def query(files: Iterable[ChainFile | Path], selection: RecordFilter,
          on_malformed: Callable[[Path, int, str], None] | None = None) -> Iterator[bytes]:
    """Lines (with their newline) of ``files`` (names, or a snapshot's files), in order, whose record matches
    ``selection``.

    Unparseable lines are skipped and reported to ``on_malformed(file, line, why)``. Raises ``OSError``
    (``NotRegularFile`` for a FIFO, a device or a directory).
    """
    for file in files:
        path, end = (file, None) if isinstance(file, Path) else (file.path, file.end)
        with open_chain_file(file) as stream:
            for number, raw in enumerate(chain_lines(stream, end), 1):
                if isinstance(raw, Oversized):
                    if on_malformed is not None and raw.complete:
                        on_malformed(path, number, f"a line of {raw.length} bytes, longer than any record")
                    continue
                if not raw.endswith(b"\n"):
                    continue  # a torn or in-flight last line
                try:
                    record = parse_plain(raw)
                except MalformedRecord as err:
                    if on_malformed is not None:
                        on_malformed(path, number, str(err))
                    continue
                if selection.matches(record):
                    yield raw


def tail(files: Sequence[ChainFile | Path], count: int) -> list[bytes]:
    """The last ``count`` complete lines across ``files`` (names, or a snapshot's files; oldest first), reading
    from the end. Raises ``OSError`` (``NotRegularFile`` for a FIFO, a device or a directory)."""
    collected: list[bytes] = []
    for file in reversed(files):
        if len(collected) >= count:
            break
        collected = _last_lines(file, count - len(collected)) + collected
    return collected[-count:] if count else []


def _last_lines(file: ChainFile | Path, count: int) -> list[bytes]:
    """The last ``count`` complete lines of ``file``, found by reading blocks backwards for newlines; only those
    lines are read (hostile review: the blocks were prepended to one growing buffer, recounted after each: a 30 MB
    line took 6 s, a 3 GB one ran out of memory). A line longer than ``MAX_LINE_BYTES`` is skipped, not counted.
    Split at "\\n" only, as the log is written and ``query`` reads it: a planted "\\r" does not make a line."""
    if not count:
        return []
    with open_chain_file(file) as stream:
        end = stream.seek(0, os.SEEK_END)
        if isinstance(file, ChainFile) and file.end is not None:
            end = min(end, file.end)  # not what was appended after the snapshot
        spans: list[tuple[int, int]] = []  # (start, stop) of complete lines, newest first
        line_end: int | None = None  # just past the newline that ends the line being looked at
        position = end
        while position > 0 and len(spans) < count:
            step = min(_BLOCK, position)
            position -= step
            stream.seek(position)
            block = stream.read(step)
            index = len(block)
            while len(spans) < count and (newline := block.rfind(b"\n", 0, index)) >= 0:
                start = position + newline + 1
                if line_end is not None and line_end - start <= MAX_LINE_BYTES + 1:
                    spans.append((start, line_end))
                line_end, index = start, newline  # the first newline found ends a torn or in-flight line
        if position == 0 and len(spans) < count and line_end is not None and line_end <= MAX_LINE_BYTES + 1:
            spans.append((0, line_end))
        lines = []
        for start, stop in reversed(spans):
            stream.seek(start)
            lines.append(stream.read(stop - start))
    return lines


def _record_time(record: dict[str, Any]) -> datetime | None:
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
