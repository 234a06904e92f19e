"""``tenantgate audit verify | tail | query``: check and search hash-chained audit logs (read only).

Exit codes: 0 intact / done, 4 tampered (verify), 1 usage or I/O error, or a log that rotated while it was
read every time it was tried (nothing judged). Everything printed for a human is escaped
(``escape_unprintable``): a log is hostile input, and a record's id or a forged recovery record must not drive
the terminal. A live PATH is read from a snapshot of its chain (``snapshot.snapshot_chain``), so rotations
while it is read are never taken for tampering.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tenantgate.cli.verdict import settle
from tenantgate.core.cedar_text import escape_unprintable, first_unprintable
from tenantgate.numerals import int_option

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from tenantgate.audit.snapshot import ChainFile
    from tenantgate.audit.verify import VerifyReport

EXIT_OK, EXIT_ERROR, EXIT_TAMPERED = 0, 1, 4
_NOT_PRINTABLE_ASCII = re.compile(rb"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class _Chain:
    """One chain to read: its files, oldest first, and its head file (None when not known); or, ``whole``, the
    chain of the live file ``live`` (files and head file found by a snapshot when it is read).

    ``expected`` (verify ``--all-workers`` only): why the chain must exist, reported when no file of it is
    left, not even its head file; "" otherwise. ``worker``: whose chain it is, when known other than by its
    name (``--all-workers``); None: by its name.
    """

    files: list[Path]
    head: Path | None
    live: Path
    expected: str = ""
    whole: bool = False
    worker: int | None = None


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (2 means DENY elsewhere in this CLI)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def add_commands(sub: Any) -> None:
    """Register ``audit verify|tail|query`` on the top-level subparsers."""
    audit = sub.add_parser("audit", help="verify and search the audit log (read only)")
    audit_sub = audit.add_subparsers(metavar="ACTION", parser_class=_Parser)

    def common(cmd: argparse.ArgumentParser, paths: str) -> None:
        cmd.add_argument("paths", nargs=paths, metavar="PATH", type=Path,
                         help="audit log(s); default: audit.path from the config")
        cmd.add_argument("--config", default=os.environ.get("TENANTGATE_CONFIG"),
                         help="TOML config file, for the default PATH (default: $TENANTGATE_CONFIG)")

    verify = audit_sub.add_parser(
        "verify", help="check the hash chain, checkpoints and head file; exit 0 intact, 4 tampered",
        description="A live file (audit.jsonl) is checked with its rotated predecessors (.N ... .1) and its "
                    ".head file. Files of one chain may also be listed; each distinct chain is checked on its own.")
    common(verify, "*")
    verify.add_argument("--public-key", type=Path, metavar="FILE", help="Ed25519 public key (PEM) for checkpoints")
    verify.add_argument("--in-order", action="store_true",
                        help="treat the PATHs as one chain in the given order (oldest first), whatever their names")
    verify.add_argument("--all-workers", action="store_true",
                        help="also verify the per-worker chains (<stem>-wN<suffix>) next to each live PATH")
    verify.add_argument("--from-genesis", action="store_true",
                        help="require the chain to start at seq 1 (nothing rotated away or cut off the front)")
    verify.add_argument("--max-unsigned", type=int_option, metavar="N",
                        help="at most N records before each checkpoint and after the last one")
    verify.add_argument("--worker", type=int_option, metavar="N",
                        help="the chain is worker N's (default: by its file name, <stem>-wN<suffix> or else 0); "
                             "checkpoints must sign it")
    verify.add_argument("--deployment", metavar="ID",
                        help="checkpoints must sign this audit.deployment_id (default: not checked)")
    verify.add_argument("--json", action="store_true", help="one JSON report per chain")
    verify.set_defaults(handler=_verify)

    tail = audit_sub.add_parser("tail", help="print the last records (JSON lines)")
    common(tail, "?")
    tail.add_argument("-n", type=int_option, default=10, metavar="N", help="how many records (default 10)")
    tail.set_defaults(handler=_tail)

    query = audit_sub.add_parser("query", help="print matching records (JSON lines), oldest first")
    common(query, "*")
    query.add_argument("--tenant", default="", help="principal_tenant, resource_tenant, target_tenant, "
                       "actor_tenant or operator_tenant")
    query.add_argument("--decision", default="", type=str.upper, choices=("", "ALLOW", "DENY"))
    query.add_argument("--reason", default="")
    query.add_argument("--since", default=None, metavar="RFC3339", help="inclusive")
    query.add_argument("--until", default=None, metavar="RFC3339", help="exclusive")
    query.add_argument("--record-type", action="append", default=[], metavar="TYPE",
                       help="decision, grant_event, checkpoint, audit_recovered, audit_probe (repeatable, a,b)")
    query.set_defaults(handler=_query)


def _verify(args: argparse.Namespace) -> int:
    from tenantgate.audit.checkpoint import DEPLOYMENT_ID_RULE, is_deployment_id, load_public_key
    from tenantgate.audit.snapshot import RotatedWhileRead

    key = load_public_key(args.public_key) if args.public_key else None
    if args.max_unsigned is not None and args.max_unsigned < 0:
        return _fail("--max-unsigned must be >= 0")
    if args.worker is not None and (args.worker < 0 or args.all_workers):
        return _fail("--worker must be >= 0, and names one chain's worker: not with --all-workers")
    if args.deployment is not None and not is_deployment_id(args.deployment):
        # No server can have written it (the config refuses it), so every checkpoint would be "TAMPERED".
        return _fail(f"--deployment must be an audit.deployment_id: {DEPLOYMENT_ID_RULE}, "
                     f"got {args.deployment[:40]!r}")
    if args.in_order and args.all_workers:
        # Review finding: --in-order read the PATHs alone and --all-workers was silently not done (exit 0).
        return _fail("--in-order reads the PATHs as one chain: not with --all-workers (verify the worker chains "
                     "without --in-order)")
    paths = _paths(args)
    if directory := next((path for path in paths if path.is_dir()), None):
        return _fail(f"{directory} is a directory: name the log file (e.g. {directory / 'audit.jsonl'})")
    _allow_open_files()
    try:
        chains = _chains(paths, in_order=args.in_order, all_workers=args.all_workers)
        if args.worker is not None and len(chains) > 1:
            return _fail(f"--worker names one chain's worker, but the PATHs are {len(chains)} chains")
        reports = [_verify_chain(chain, key, args) for chain in chains]
    except RotatedWhileRead as err:
        return _fail(f"audit log {err.filename}: {err.strerror}")
    except OSError as err:
        return _fail(f"cannot read audit log {err.filename or ''}: {err.strerror or err}")
    # Every chain verified before anything is printed: a reader that leaves early cannot hide a tampered one.
    code = settle(EXIT_TAMPERED if any(not report.intact for report in reports) else EXIT_OK)
    for report in reports:
        if args.json:
            print(json.dumps(report.to_dict()))  # ensure_ascii: every control character is a \u escape
            continue
        for finding in report.findings:
            _say(("TAMPERED " if finding.tampered else "note     ") + str(finding))
        _say(_summary(report))
    return code


def _verify_chain(chain: _Chain, key: Ed25519PublicKey | None, args: argparse.Namespace) -> VerifyReport:
    """The report on one chain: a live file's from a snapshot of its chain (``missing`` when none of it is left
    but it must exist). Raises ``OSError`` (``FileNotFoundError`` when no file of an unexpected chain exists)."""
    from tenantgate.audit.snapshot import snapshot_chain
    from tenantgate.audit.verify import missing_chain, verify_files, verify_snapshot

    genesis, unsigned, deployment = args.from_genesis, args.max_unsigned, args.deployment
    worker = args.worker if args.worker is not None else chain.worker
    if not chain.whole:
        return verify_files(chain.files, head_file=chain.head, public_key=key, from_genesis=genesis,
                            max_unsigned=unsigned, worker=worker, deployment=deployment)
    with snapshot_chain(chain.live) as snapshot:
        if not snapshot.empty:  # a head file alone is a chain of no files: verify says what it names is missing
            return verify_snapshot(snapshot, public_key=key, from_genesis=genesis, max_unsigned=unsigned,
                                   worker=worker, deployment=deployment)
    if chain.expected:
        return missing_chain(chain.live, chain.expected)
    raise FileNotFoundError(2, "No such file or directory", str(chain.live))


def _tail(args: argparse.Namespace) -> int:
    from tenantgate.audit.query import tail

    if args.n < 0:
        return _fail("-n must be >= 0")
    path = args.paths if args.paths is not None else _configured_path(args)
    _allow_open_files()
    try:
        with ExitStack() as held:
            chain, = _chains([path], in_order=False, all_workers=False)
            return _emit(tail(_files(chain, held), args.n))
    except OSError as err:
        return _fail(f"cannot read audit log {err.filename or ''}: {err.strerror or err}")


def _query(args: argparse.Namespace) -> int:
    from tenantgate.audit.query import RECORD_TYPES, RecordFilter, parse_time, query

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as err:
        return _fail(f"--since/--until must be RFC 3339 timestamps: {err}")
    types = frozenset(t.strip() for item in args.record_type for t in item.split(",") if t.strip())
    if unknown := sorted(types.difference(RECORD_TYPES)):
        # Review finding: a typo (`--record-type grant`) printed nothing and exited 0, as if no record matched.
        return _fail(f"--record-type {', '.join(unknown)}: not a record type (one of {', '.join(RECORD_TYPES)})")
    selection = RecordFilter(tenant=args.tenant, decision=args.decision, reason=args.reason, since=since,
                             until=until, record_types=types)

    def malformed(path: Path, line: int, why: str) -> None:
        print(escape_unprintable(f"tenantgate: {path}:{line}: skipped, not a JSON record ({why})"), file=sys.stderr)

    _allow_open_files()
    try:
        with ExitStack() as held:
            chains = _chains(_paths(args), in_order=False, all_workers=False)
            return _emit(query([f for chain in chains for f in _files(chain, held)], selection, malformed))
    except OSError as err:
        return _fail(f"cannot read audit log {err.filename or ''}: {err.strerror or err}")


def _files(chain: _Chain, held: ExitStack) -> list[ChainFile]:
    """The files of ``chain`` to read: a live file's chain from a snapshot, kept open until ``held`` closes.
    Raises ``OSError`` (``FileNotFoundError`` when no file of it exists; a head file alone is not read)."""
    from tenantgate.audit.snapshot import ChainFile, snapshot_chain

    if not chain.whole:
        return [ChainFile(path) for path in chain.files]
    snapshot = held.enter_context(snapshot_chain(chain.live))
    if not snapshot.files:
        raise FileNotFoundError(2, "No such file or directory", str(chain.live))
    return list(snapshot.files)


def _allow_open_files() -> None:
    """Raise this process's soft limit on open files to the hard one: a snapshot holds every file of a chain
    open (``keep_files = 0`` keeps them all), and the soft limit is often 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            pass  # the soft limit stays: a very long chain fails with "Too many open files" (exit 1)


def _paths(args: argparse.Namespace) -> list[Path]:
    return list(args.paths) if args.paths else [_configured_path(args)]


def _configured_path(args: argparse.Namespace) -> Path:
    from tenantgate import config

    return Path(config.load(args.config).audit.path)


def _chains(paths: list[Path], *, in_order: bool, all_workers: bool) -> list[_Chain]:
    """Group PATHs into chains: a live PATH alone is its whole chain (``whole``, listed when it is read), rotated
    files named are that list. Raises ``OSError``.

    ``all_workers``: the worker chains beside each live PATH too, every worker from 1 to the highest one
    found; each of them (worker 0, the PATH, included) is ``expected``, reported missing when no file of it
    is left at all, and is known to be that worker's. A PATH's worker is the one its name says, as without
    ``all_workers`` (review finding: it was taken for worker 0's, so ``--all-workers audit-w1.jsonl`` failed
    worker 1's own chain and passed worker 0's copied in its place).
    """
    from tenantgate.audit.files import head_path, split_rotated

    if in_order:
        last_live = split_rotated(paths[-1])[1] == 0
        return [_Chain(paths, head_path(paths[-1]) if last_live else None, paths[-1])]
    groups: dict[Path, list[tuple[int, Path]]] = {}
    expected: dict[Path, str] = {}  # chains that must exist (a higher-numbered worker's does): why
    known_worker: dict[Path, int] = {}  # with all_workers: whose each chain is
    for path in paths:
        live, number = split_rotated(path)
        groups.setdefault(live, []).append((number, path))
        if all_workers and number == 0:
            workers = _worker_files(live)
            highest = workers[-1][0] if workers else 0
            for worker, worker_live in workers:
                groups.setdefault(worker_live, [(0, worker_live)])
                known_worker[worker_live] = worker
                expected[worker_live] = f"worker {worker}'s chain has no file left (log, rotated file or head " \
                    f"file), but worker {highest}'s has: it was deleted (every worker writes one from its start)"
            if workers:
                expected.setdefault(live, f"worker 0's chain has no file left (log, rotated file or head file), but "
                                    f"worker {highest}'s has: it was deleted (every worker writes one from its "
                                    "start)")
    chains: list[_Chain] = []
    for live, members in groups.items():
        # A live PATH named twice (or named beside --all-workers, which adds it too) is still its whole chain
        # (review finding: it was read alone, its rotated files unread, and a record modified in one passed).
        if {number for number, _path in members} == {0}:
            chains.append(_Chain([], head_path(live), live, expected.get(live, ""), whole=True,
                                 worker=known_worker.get(live)))
        else:
            ordered = [path for _number, path in sorted(set(members), key=lambda m: (m[0] == 0, -m[0]))]
            chains.append(_Chain(ordered, head_path(live) if any(n == 0 for n, _p in members) else None, live,
                                 worker=known_worker.get(live)))
    return chains


def _worker_files(live: Path) -> list[tuple[int, Path]]:
    """The worker numbers and live paths of the worker chains beside ``live`` (``<stem>-wN<suffix>``), ascending:
    every worker found, and every one from 1 to the highest found that a server can run (``MAX_WORKERS - 1``),
    gaps included (a worker in a gap had its chain deleted: verify reports it missing).

    A worker is found by any file of its chain: the live file, a rotated ``.N`` or the head file. Its live
    file may be gone while the others remain, and verify must then report what is missing, not skip it. A
    deleted highest-numbered worker leaves no trace here. A worker numbered beyond what a server runs fills no
    gap (review finding: one empty file named ``audit-w99999999999999.jsonl.head`` made verify build a path
    for every number below it, until it ran out of memory); its chain is verified all the same.
    """
    from tenantgate.configcheck import MAX_WORKERS

    pattern = re.compile(re.escape(live.stem) + r"-w([1-9][0-9]*)" + re.escape(live.suffix) +
                         r"(?:\.head|\.[1-9][0-9]*)?\Z")  # \Z: $ also matches before a final newline
    try:
        names = os.listdir(live.parent)
    except OSError:
        return []
    found = {int(m[1]) for name in names if (m := pattern.match(name))}
    found.update(range(1, max((n for n in found if n < MAX_WORKERS), default=0)))
    return [(worker, live.with_name(f"{live.stem}-w{worker}{live.suffix}")) for worker in sorted(found)]


def _summary(report: Any) -> str:
    files = f" ({', '.join(report.files)})" if report.files else ""  # none left: the findings name the head file
    if not report.intact:
        problems = sum(f.tampered for f in report.findings)
        return f"TAMPERED: {problems} problem(s) in {report.records} records{files}"
    signed = f", {report.signatures_verified} signature(s) verified" if report.signatures_verified else ""
    return (f"OK: {report.records} records, seq {report.first_seq}..{report.last_seq}, {report.checkpoints} "
            f"checkpoint(s){signed}, {report.unsigned_tail} after the last{files}")


def _emit(lines: Iterable[bytes]) -> int:
    out = sys.stdout.buffer
    escaped = 0
    try:
        for line in lines:
            shown = _printable(line)
            escaped += shown is not line
            out.write(shown)
        out.flush()
    except BrokenPipeError:
        # The reader (head, less) went away: not an error for a query.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if escaped:
        print(f"tenantgate: {escaped} line(s) held control or other non-printable characters, which no record the "
              "sink writes holds: printed escaped, not as stored", file=sys.stderr)
    return EXIT_OK


def _printable(line: bytes) -> bytes:
    """``line`` itself when it is printable ASCII (plus its newline), as every record the sink writes is.

    Else a copy with its non-printable characters escaped as JSON does (``\\u001b``; bytes that are not
    UTF-8 as ``\\xNN``), so a line planted in the log cannot drive the terminal, and JSON stays the same JSON.
    """
    body, end = (line[:-1], line[-1:]) if line.endswith(b"\n") else (line, b"")
    if not _NOT_PRINTABLE_ASCII.search(body):
        return line
    text = body.decode("utf-8", "backslashreplace")
    shown = "".join(_json_escape(ch) if first_unprintable(ch) else ch for ch in text).encode("utf-8") + end
    return line if shown == line else shown  # printable non-ASCII text alone is shown as stored


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _say(line: str) -> None:
    print(escape_unprintable(line))


def _fail(message: str) -> int:
    print(escape_unprintable(f"tenantgate: {message}"), file=sys.stderr)
    return EXIT_ERROR
