"""File naming, the head sidecar and tail scanning for chained audit logs.

Naming (``audit.jsonl`` is the configured path):

- ``audit.jsonl``            the live file of worker 0; ``audit-w1.jsonl``, ``audit-w2.jsonl`` for workers 1, 2, ...
- ``audit.jsonl.1``, ``.2``  rotated files of that chain, ``.1`` the newest (logrotate's numbering)
- ``audit.jsonl.head``       the chain head: ``seq`` and ``hash`` of the last record written, updated per batch
- ``audit.jsonl.torn-<UTC>`` bytes cut off the end of the log at recovery, kept as evidence
- ``audit.jsonl.unchained-<UTC>`` a log from before the hash chain, moved aside when the chain starts
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tenantgate.audit.chain import GENESIS_HASH, ChainedRecord, MalformedRecord, parse, parse_plain
from tenantgate.paths import open_regular

HEAD_SIZE = 160  # bytes; the head file is rewritten in place with one pwrite of this fixed size
TAIL_WINDOW = 1 << 20  # how far back from the end recovery looks for the last intact record
# ASCII digits only, to the very end (``$`` would also take a name ending in a newline).
_ROTATED = re.compile(r"(?P<live>.+)\.(?P<n>[1-9][0-9]*)")
_ROTATION_NUMBER = re.compile(r"[1-9][0-9]*")
# The end of a worker's stem (``worker_path``): \Z, as $ also matches before a final newline. At most 254
# digits: no file name is longer (255 bytes), and int() refuses more than 4300 (review finding: an audit.path
# ending in 5000 digits made `validate` end in a traceback).
_WORKER = re.compile(r".-w([1-9][0-9]{0,253})\Z")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain ends: the last record's ``seq`` and ``hash`` (seq 0 = empty chain, genesis hash)."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class TailScan:
    """The end of a log file as found by ``scan_tail``.

    ``last`` is the last intact chained record (None if none was found in the window) and ``intact_end`` the
    offset just after it: bytes from there to ``size`` are torn or corrupt. ``legacy`` is True when the
    window holds JSON records without chain fields and no chained record (a log from before the chain).
    """

    last: ChainedRecord | None
    intact_end: int
    size: int
    legacy: bool
    whole_file: bool


def worker_path(path: str | os.PathLike[str], worker: int) -> Path:
    """The live file of ``worker``'s chain: ``path`` itself for worker 0, ``<stem>-w<N><suffix>`` otherwise.

    Raises ``ValueError`` for a negative worker number.
    """
    base = Path(path)
    if worker < 0:
        raise ValueError("worker must be >= 0")
    if worker == 0:
        return base
    return base.with_name(f"{base.stem}-w{worker}{base.suffix}")


def worker_of(live: Path) -> int:
    """The worker whose chain ``live`` is by its name (``worker_path`` reversed): N for ``<stem>-wN<suffix>``,
    else 0. A name is all a file says about its chain: a log renamed (or an ``audit.path`` that ends in
    ``-wN`` itself) is taken for another worker's."""
    match = _WORKER.search(live.stem)
    return int(match[1]) if match else 0


def rotated_path(live: Path, number: int) -> Path:
    """``<live>.<number>``: the ``number``-th newest rotated file of the chain."""
    return live.with_name(f"{live.name}.{number}")


def head_path(live: Path) -> Path:
    return live.with_name(live.name + ".head")


def torn_path(live: Path, stamp: str) -> Path:
    return live.with_name(f"{live.name}.torn-{stamp}")


def unchained_path(live: Path, stamp: str) -> Path:
    return live.with_name(f"{live.name}.unchained-{stamp}")


def split_rotated(path: Path) -> tuple[Path, int]:
    """``(live path, rotation number)``; number 0 means ``path`` is a live file."""
    match = _ROTATED.fullmatch(path.name)
    if match is None:
        return path, 0
    return path.with_name(match["live"]), int(match["n"])


def rotated_numbers(live: Path) -> list[int]:
    """Numbers of the existing rotated files of ``live``, ascending. Raises ``OSError`` if unlistable."""
    numbers = []
    prefix = live.name + "."
    for name in os.listdir(live.parent):
        # ASCII digits only: str.isdigit() also takes a superscript two (which int() then refuses: a stray
        # `audit.jsonl.\u00b2` broke rotation and `audit verify`) and Arabic-Indic digits (which int() reads).
        if name.startswith(prefix) and _ROTATION_NUMBER.fullmatch(name[len(prefix):]):
            numbers.append(int(name[len(prefix):]))
    return sorted(numbers)


def chain_files(live: Path) -> list[Path]:
    """The files of ``live``'s chain, oldest first: ``.N`` ... ``.1``, then ``live`` itself if it exists.

    A ``.1`` that is a second name of ``live`` itself (a writer killed between linking the old file to ``.1``
    and renaming the new one into place; the next write removes it) is left out: that rotation did not happen.
    The names are stale once a rotation runs (it renames every ``.N`` to ``.N+1``): to read a chain that a
    writer may be rotating, take ``snapshot.snapshot_chain`` instead.
    """
    files = [rotated_path(live, n) for n in reversed(rotated_numbers(live))]
    try:
        live_stat = os.stat(live)
    except FileNotFoundError:
        return files
    if files and files[-1] == rotated_path(live, 1) and same_file(files[-1], live_stat):
        files.pop()
    files.append(live)
    return files


def same_file(path: Path, other: os.stat_result) -> bool:
    """True when ``path`` names the file ``other`` was taken of; False when it is another or missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def encode_head(head: ChainHead) -> bytes:
    """The fixed-size content of the head file: canonical JSON padded with spaces, ending in a newline."""
    # Equal to canonical({"hash": ..., "seq": ...}) for a hex hash; formatted directly, it is on the hot path.
    text = b'{"hash":"%s","seq":%d}' % (head.hash.encode("ascii"), head.seq)
    return text.ljust(HEAD_SIZE - 1) + b"\n"


def read_head(path: Path) -> ChainHead | None:
    """The chain head recorded in a head file; None when the file does not exist.

    Raises ``MalformedRecord`` when it exists but does not hold a head, ``NotRegularFile`` when it is not a regular
    file (a FIFO would block the read forever), ``OSError`` when unreadable.
    """
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, 4 * HEAD_SIZE)  # one read: a regular file returns all of it (anything longer is bad)
    finally:
        os.close(fd)
    obj = parse_plain(data.strip())
    seq, value = obj.get("seq"), obj.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(value, str) or \
            len(value) != 64:
        raise MalformedRecord("head file does not hold {seq, hash}")
    return ChainHead(seq, value)


def scan_tail(fd: int, size: int, window: int = TAIL_WINDOW) -> TailScan:
    """Find the last intact chained record within ``window`` bytes of the end of the open file ``fd``.

    Looks at the last 64 KiB first (the usual case: a record or two, maybe a torn line) and widens to
    ``window`` only when that holds no intact record. Only reads (``os.pread``); raises ``OSError``.
    """
    first = min(window, 64 * 1024)
    scan = _scan_window(fd, size, first)
    if scan.last is None and not scan.whole_file and window > first:
        scan = _scan_window(fd, size, window)
    return scan


def _scan_window(fd: int, size: int, window: int) -> TailScan:
    start = max(0, size - window)
    data = os.pread(fd, size - start, start) if size else b""
    complete = data[: data.rfind(b"\n") + 1]
    offsets: list[tuple[int, bytes]] = []
    position = start
    for piece in complete.splitlines(keepends=True):
        offsets.append((position, piece))
        position += len(piece)
    if start > 0 and offsets:
        offsets.pop(0)  # may begin mid-line
    legacy_seen = chained_seen = False
    for offset, piece in reversed(offsets):
        try:
            record = parse(piece)
        except MalformedRecord:
            legacy_seen = legacy_seen or _is_unchained_record(piece)
            continue
        if record.intact:
            return TailScan(record, offset + len(piece), size, False, start == 0)
        chained_seen = True
    return TailScan(None, start, size, legacy_seen and not chained_seen, start == 0)


def find_record(fd: int, end: int, seq: int, window: int = TAIL_WINDOW) -> tuple[int, ChainedRecord] | None:
    """The offset and the record of the line numbered ``seq`` among the complete lines before ``end`` in the open
    file ``fd``, looking back at most ``window`` bytes; None when it is not there (earlier in the file, in an
    earlier file, or gone). Lines that do not parse are skipped; the record found may not be intact (compare
    ``claimed_hash``). Looks at the last 64 KiB first, like ``scan_tail``. Only reads; raises ``OSError``.
    """
    reach = min(window, 64 * 1024)
    while True:
        start = max(0, end - reach)
        data = os.pread(fd, end - start, start) if end > start else b""
        lines = data[: data.rfind(b"\n") + 1].splitlines(keepends=True)
        offset = start + sum(map(len, lines))
        for number, piece in enumerate(reversed(lines)):
            offset -= len(piece)
            if start > 0 and number == len(lines) - 1:
                break  # may begin mid-line: the wider window reads it whole
            try:
                record = parse(piece)
            except MalformedRecord:
                continue
            if record.seq == seq:
                return offset, record
            if record.seq < seq:
                return None  # seq only grows along a file: it is not further back
        if start == 0 or reach >= window:
            return None
        reach = window


def last_record(path: Path) -> ChainedRecord | None:
    """The last intact chained record of a (rotated) file, or None. Raises ``OSError`` (``RefusedFile`` when
    the file is not a regular one)."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        return scan_tail(fd, os.fstat(fd).st_size).last
    finally:
        os.close(fd)


def resume_point(live: Path, remembered: ChainHead | None) -> ChainHead:
    """Where the chain continues when ``live`` is empty (new, rotated away, or truncated by copytruncate).

    The highest seq of: what the writer remembers, the head file, and the last record of ``live.1``. Each can
    only lag the true head (seq only grows), never lead it; no source at all means a new chain (genesis).
    """
    candidates = [remembered] if remembered is not None else []
    try:
        head = read_head(head_path(live))
    except (OSError, MalformedRecord):
        head = None  # reported by verify; the other sources still count
    if head is not None:
        candidates.append(head)
    try:
        last = last_record(rotated_path(live, 1))
    except FileNotFoundError:
        last = None
    if last is not None:
        candidates.append(ChainHead(last.seq, last.claimed_hash))
    return max(candidates, key=lambda c: c.seq, default=ChainHead(0, GENESIS_HASH))


def known_head(live: Path, ours: ChainHead | None) -> ChainHead | None:
    """The furthest the chain of ``live`` is known to have reached: ``ours`` (a writer's own last record, when
    it went to the file now at ``live``) or the head file's, the higher seq (``ours`` on a tie, as a head file
    can be rewritten); None when neither is known. An unreadable head file, or one that is not a regular file,
    counts as none (verify reports it)."""
    try:
        recorded = read_head(head_path(live))
    except (OSError, MalformedRecord):
        recorded = None
    if ours is None or (recorded is not None and recorded.seq > ours.seq):
        return recorded
    return ours


def _is_unchained_record(piece: bytes) -> bool:
    try:
        obj = parse_plain(piece)
    except MalformedRecord:
        return False
    return "hash" not in obj and "prev_hash" not in obj and "record_type" in obj
