"""Verify a hash-chained audit log: find modified, deleted, inserted, reordered and truncated records.

Each finding names the file, the line (1-based) and the record's id (``decision_id`` / ``event_id``).
Findings marked ``tampered`` mean the log is not intact; the others are notices (e.g. the chain starts
after records rotated away). See ``docs/audit.md`` for exactly what can and cannot be detected.

Files are opened with ``open_regular``: a FIFO, device or directory in the place of a log file or of the head
file is a finding (``not_regular``), never waited on. A finding's fields hold what the log says (an id may
hold any character); its ``str`` escapes what a terminal would interpret.

Checkpoints must sign the chain being verified (``checkpoint.ChainIdentity``): the worker given, by default
the one its live file's name says (``files.worker_of``), and the deployment id given, if any. That is what
stops a chain replaced whole by another one signed with the same key: the name of the file verified and the
deployment id the operator passes are what the verifier knows besides the files' contents.

A live log is read from a snapshot (``snapshot.snapshot_chain``): rotations while it is read rename its files
but change nothing read, and records appended after the snapshot are not read. When names kept changing
through every attempt, the files held open are judged with a ``replaced_while_read`` note.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenantgate.audit.chain import GENESIS_HASH, ChainedRecord, MalformedRecord, parse, parse_plain, record_id
from tenantgate.audit.checkpoint import CHECKPOINT, check_checkpoint
from tenantgate.audit.files import ChainHead, head_path, split_rotated, worker_of
from tenantgate.audit.query import MAX_LINE_BYTES, Oversized, chain_lines, open_chain_file
from tenantgate.audit.recovery import RECOVERED
from tenantgate.audit.snapshot import ChainFile, ChainSnapshot, read_head_file, snapshot_chain
from tenantgate.core.cedar_text import escape_unprintable
from tenantgate.paths import NotRegularFile


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (``tampered``) or notice, located as precisely as the log allows (line 0: whole file)."""

    kind: str
    file: str
    line: int
    record_id: str
    seq: int
    message: str
    tampered: bool

    def __str__(self) -> str:
        """``file:line: [id] seq N: message``, safe to print: the id and message may quote a hostile record
        (review finding: an id holding ESC sequences rewrote the terminal), so non-printable characters
        are escaped (``\\x1b``)."""
        ident = f" [{self.record_id}]" if self.record_id else ""
        seq = f" seq {self.seq}:" if self.seq else ""
        return escape_unprintable(f"{self.file}:{self.line}:{ident}{seq} {self.message}")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying one chain (one or more files, oldest first)."""

    files: tuple[str, ...]
    records: int
    first_seq: int
    last_seq: int
    last_hash: str
    checkpoints: int
    signatures_verified: int
    unsigned_tail: int
    findings: tuple[Finding, ...]

    @property
    def intact(self) -> bool:
        """True when no finding is tamper evidence."""
        return not any(f.tampered for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["intact"] = self.intact
        return out


@dataclass(slots=True)
class _State:
    head: ChainHead | None
    public_key: Ed25519PublicKey | None
    from_genesis: bool
    max_unsigned: int | None
    worker: int  # the chain's, which its checkpoints must sign
    deployment: str | None  # the deployment id its checkpoints must sign; None: not checked
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = ""
    alt_hash: str = ""  # what the previous record really hashes to, if it lies about its hash
    last_where: tuple[str, int, str] = ("", 0, "")
    skipped: int = 0  # unparseable lines since the last record
    checkpoints: int = 0
    verified: int = 0
    since_checkpoint: int = 0
    head_record: tuple[str, str, int, str] | None = None  # hash, file, line, id of the record at head.seq
    past_head: tuple[str, int, str] | None = None  # where the first record after head.seq is

    def add(self, kind: str, where: tuple[str, int, str], seq: int, message: str, tampered: bool = True) -> None:
        self.findings.append(Finding(kind, where[0], where[1], where[2], seq, message, tampered))


def verify_log(path: str | os.PathLike[str], *, public_key: Ed25519PublicKey | None = None,
               from_genesis: bool = False, max_unsigned: int | None = None, worker: int | None = None,
               deployment: str | None = None) -> VerifyReport:
    """Verify the chain of a live log (its rotated predecessors ``.N`` ... ``.1`` first) against its head file,
    as it was at one instant (``snapshot_chain``), however it rotates or grows while it is read.

    ``worker``: whose chain it is (None: by the live file's name, ``worker_of``); ``deployment``: the
    ``audit.deployment_id`` it was written with (None: not checked). Every checkpoint must sign both.

    Given a rotated file (``audit.jsonl.3``) only that file is checked. Raises ``OSError`` when a file
    cannot be read (``FileNotFoundError`` when there is no file at all, not even a head file; a head file
    alone is reported as the records it names missing; ``RotatedWhileRead`` in the rare case that no
    attempt at a snapshot held the live file).
    """
    live, number = split_rotated(Path(path))
    if number:
        return verify_files([Path(path)], public_key=public_key, from_genesis=from_genesis,
                            max_unsigned=max_unsigned, worker=worker, deployment=deployment)
    with snapshot_chain(live) as snapshot:
        if snapshot.empty:  # with a head file: every file of a chain was removed
            raise FileNotFoundError(2, "No such file or directory", str(live))
        return verify_snapshot(snapshot, public_key=public_key, from_genesis=from_genesis, max_unsigned=max_unsigned,
                               worker=worker, deployment=deployment)


def verify_snapshot(snapshot: ChainSnapshot, *, public_key: Ed25519PublicKey | None = None,
                    from_genesis: bool = False, max_unsigned: int | None = None, worker: int | None = None,
                    deployment: str | None = None) -> VerifyReport:
    """Verify the files of ``snapshot`` as one chain against the head file read with them (see ``verify_files``;
    ``worker`` None: by the name of the snapshot's live file). Raises ``OSError`` when a file cannot be read."""
    chain = _State(None, public_key, from_genesis, max_unsigned,
                   worker_of(snapshot.live) if worker is None else worker, deployment)
    report = _verify(chain, snapshot.files, head_path(snapshot.live), (snapshot.head, snapshot.head_error))
    if snapshot.settled:
        return report
    note = Finding("replaced_while_read", str(snapshot.live), 0, "", 0, "the log's files kept being renamed or "
                   "replaced while they were read, also while writers were held back (not TenantGate's rotation): "
                   "judged as they were held open", tampered=False)
    return dataclasses.replace(report, findings=(*report.findings, note))


def verify_files(files: Sequence[str | os.PathLike[str]], *, head_file: str | os.PathLike[str] | None = None,
                 public_key: Ed25519PublicKey | None = None, from_genesis: bool = False,
                 max_unsigned: int | None = None, worker: int | None = None,
                 deployment: str | None = None) -> VerifyReport:
    """Verify ``files`` (oldest first) as one chain.

    ``head_file``: the chain's head sidecar; when given, a chain that ends before the seq it names is
    reported as truncated (a missing head file is reported as a notice); with no ``files`` at all, a head
    file naming records is reported as the whole log missing. ``public_key``: checkpoint
    signatures are verified and at least one valid checkpoint is required. ``from_genesis``: the chain must
    start at seq 1 from the genesis hash. ``max_unsigned``: at most this many records may precede each
    checkpoint or follow the last one. ``worker``: whose chain it is, by default the one the name of the last
    file's live file says (``worker_of``); ``deployment``: the deployment id (None: not checked). Every
    checkpoint must sign both. Raises ``OSError`` when a file cannot be read.
    """
    head = None if head_file is None else Path(head_file)
    if worker is None:
        worker = worker_of(split_rotated(Path(files[-1]))[0]) if files else 0
    chain = _State(None, public_key, from_genesis, max_unsigned, worker, deployment)
    return _verify(chain, [ChainFile(Path(f)) for f in files], head, None if head is None else read_head_file(head))


def _verify(state: _State, files: Sequence[ChainFile], head_file: Path | None,
            head: tuple[ChainHead | None, Exception | None] | None) -> VerifyReport:
    if head_file is not None and head is not None:
        _load_head(state, head_file, *head)
    for file in files:
        try:
            stream = open_chain_file(file)
        except NotRegularFile as err:
            state.add("not_regular", (str(file.path), 0, ""), 0, f"{err.strerror}: not read, records in its place "
                      "cannot be checked (a log file was replaced)")
            continue
        with stream:
            for number, raw in enumerate(chain_lines(stream, file.end), 1):
                _check_line(state, str(file.path), number, raw)
    paths = [file.path for file in files]
    _finish(state, paths, head_file)
    return VerifyReport(tuple(str(p) for p in paths), state.records, state.first_seq, state.last_seq,
                        state.last_hash, state.checkpoints, state.verified, state.since_checkpoint,
                        tuple(state.findings))


def missing_chain(live: str | os.PathLike[str], message: str) -> VerifyReport:
    """The report on a chain of which no file is left, not even its head file, although it must have existed
    (``verify --all-workers``: a worker numbered below one whose chain is there): one ``missing`` finding."""
    finding = Finding("missing", str(live), 0, "", 0, message, True)
    return VerifyReport((), 0, 0, 0, "", 0, 0, 0, (finding,))


def _load_head(state: _State, path: Path, head: ChainHead | None, error: Exception | None) -> None:
    """Take the head read from ``path`` (``read_head_file``): ``error`` is what made it unreadable."""
    if isinstance(error, NotRegularFile):
        state.add("not_regular", (str(path), 0, ""), 0, f"head file is {error.strerror}: not read (replaced)")
        return
    if error is not None:
        state.add("head_malformed", (str(path), 1, ""), 0, f"head file is not valid: {error}")
        return
    state.head = head
    if state.head is None:
        state.add("no_head", (str(path), 0, ""), 0, "no head file: records cut off the end cannot be detected "
                  "(only checkpoints bound them)", tampered=False)


def _check_line(state: _State, file: str, number: int, raw: bytes | Oversized) -> None:
    if isinstance(raw, Oversized):
        state.add("malformed", (file, number, ""), 0, f"a line of {raw.length} bytes, longer than any record "
                  f"({MAX_LINE_BYTES} at most): not read, inserted or a modified record")
        state.skipped += 1
        return
    if not raw.endswith(b"\n"):
        state.add("torn", (file, number, ""), 0, f"incomplete last line ({len(raw)} bytes, no newline): a write "
                  "torn by a crash, or the file was truncated mid-record")
        return
    try:
        record = parse(raw)
    except MalformedRecord as err:
        state.add("malformed", (file, number, _loose_id(raw)), 0,
                  f"not a chained record ({err}): inserted, or a modified record")
        state.skipped += 1
        return
    where = (file, number, record_id(record.fields))
    if not record.canonical:
        state.add("modified", where, record.seq, "bytes differ from the canonical encoding (record modified)")
    elif record.computed_hash != record.claimed_hash:
        state.add("modified", where, record.seq, "content does not match its hash (record modified)")
    _check_link(state, where, record)
    _check_kind(state, where, record)
    if state.head is not None:
        if record.seq == state.head.seq:
            state.head_record = (record.claimed_hash, file, number, where[2])
        elif record.seq == state.head.seq + 1 and state.past_head is None:
            state.past_head = where
    state.records += 1
    state.first_seq = state.first_seq or record.seq
    state.last_seq, state.last_hash, state.last_where = record.seq, record.claimed_hash, where
    state.alt_hash = record.computed_hash if record.computed_hash != record.claimed_hash else ""
    state.skipped = 0


def _check_link(state: _State, where: tuple[str, int, str], record: ChainedRecord) -> None:
    seq = record.seq
    if not state.records:
        if seq == 1 and record.prev_hash == GENESIS_HASH:
            return
        if seq == 1 or record.prev_hash == GENESIS_HASH:
            state.add("chain_break", where, seq, "seq 1 must follow the genesis hash, and only seq 1 may")
        elif state.from_genesis:
            state.add("missing", where, seq, f"the chain starts at seq {seq}: records 1..{seq - 1} are missing")
        else:
            state.add("start", where, seq, f"the chain starts at seq {seq}: records 1..{seq - 1} are not in "
                      "these files (rotated away, or removed)", tampered=False)
        return
    expected = state.last_seq + 1
    after = f"line {state.last_where[1]} of {state.last_where[0]}" if state.last_where[0] != where[0] else \
        f"line {state.last_where[1]}"
    if record.prev_hash in (state.last_hash, state.alt_hash):
        if seq != expected:
            state.add("chain_break", where, seq, f"links to {after} (seq {state.last_seq}) but is numbered {seq}")
        return
    if state.skipped and expected <= seq <= expected + state.skipped:
        return  # explained by the unparseable line(s) just reported
    if seq > expected:
        state.add("missing", where, seq, f"record(s) seq {expected}..{seq - 1} are missing between {after} and "
                  "this line (deleted, or moved)")
    elif seq < expected:
        state.add("out_of_order", where, seq, f"seq {seq} comes after seq {state.last_seq} ({after}): a record "
                  "was reordered, duplicated or inserted")
    else:
        state.add("chain_break", where, seq, f"prev_hash does not match the record before ({after}): one of "
                  "them was replaced or inserted")


def _check_kind(state: _State, where: tuple[str, int, str], record: ChainedRecord) -> None:
    kind = record.record_type
    if kind == CHECKPOINT:
        problem = check_checkpoint(record.fields, record.seq, record.prev_hash, state.public_key,
                                   worker=state.worker, deployment=state.deployment)
        if problem:
            state.add("bad_checkpoint", where, record.seq, problem)
            return
        _check_gap(state, where, record.seq)
        state.checkpoints += 1
        state.verified += state.public_key is not None
        state.since_checkpoint = 0
        return
    state.since_checkpoint += 1
    if kind == RECOVERED:
        f = record.fields
        aside = (f"{f.get('set_aside_bytes')} bytes set aside in {f.get('evidence')}" if f.get("evidence")
                 else "nothing set aside")
        state.add("recovered", where, record.seq, f"recovery ({f.get('reason')}): {aside}, chain resumed after seq "
                  f"{f.get('resumed_seq')}", tampered=False)
        head_seq, resumed = f.get("head_seq"), f.get("resumed_seq")
        if isinstance(head_seq, int) and isinstance(resumed, int) and head_seq > resumed:
            state.add("lost", where, record.seq, f"records seq {resumed + 1}..{head_seq} had been written (head file) "
                      "but were gone at this recovery: truncated, or lost in a power failure in flush mode")


def _check_gap(state: _State, where: tuple[str, int, str], seq: int) -> None:
    if state.max_unsigned is not None and state.since_checkpoint > state.max_unsigned:
        state.add("unsigned", where, seq, f"{state.since_checkpoint} records precede this checkpoint without one "
                  f"(more than {state.max_unsigned}): a checkpoint may have been removed")


def _finish(state: _State, paths: list[Path], head_file: str | os.PathLike[str] | None) -> None:
    last = state.last_where if state.records else (str(paths[-1]) if paths else "", 0, "")
    head = state.head
    if head is not None:
        if not paths and head.seq > 0:
            state.add("missing", (str(head_file), 0, ""), head.seq, f"no file of this log is left but its head file "
                      f"says records up to seq {head.seq} were written: the log was deleted or moved away")
        elif head.seq > state.last_seq:
            state.add("truncated", last, state.last_seq, f"the log ends at seq {state.last_seq} but the head file "
                      f"says seq {head.seq}: {head.seq - state.last_seq} record(s) cut off the end")
        elif state.head_record is not None and state.head_record[0] != head.hash:
            _hash, file, line, ident = state.head_record
            state.add("head_mismatch", (file, line, ident), head.seq,
                      "hash differs from the head file's: the end of the log was rewritten")
        if head.seq < state.last_seq:
            # Not tamper evidence on its own: a writer killed between its append and its head update leaves
            # one batch (of any size, group commit) past the head, and a failing head write leaves more.
            # But records appended by someone with write access look exactly the same, so it is said.
            state.add("past_head", state.past_head or last, head.seq + 1,
                      f"{state.last_seq - head.seq} record(s) after the head file's last recorded seq {head.seq}: "
                      "written after the head's last update (a crash) or appended by someone else", tampered=False)
    if state.max_unsigned is not None and state.since_checkpoint > state.max_unsigned:
        state.add("unsigned", last, state.last_seq, f"{state.since_checkpoint} records after the last checkpoint "
                  f"(more than {state.max_unsigned})")
    if state.public_key is not None and state.records and not state.verified:
        state.add("unsigned", last, state.last_seq, "no valid checkpoint of this chain signed by the given key: the "
                  "whole chain could have been rewritten or replaced")
    elif state.public_key is None and state.checkpoints:
        state.add("signatures_unchecked", last, 0, f"{state.checkpoints} checkpoint signature(s) not checked "
                  "(no public key given)", tampered=False)


def _loose_id(raw: bytes) -> str:
    try:
        return record_id(parse_plain(raw))
    except MalformedRecord:
        return ""
