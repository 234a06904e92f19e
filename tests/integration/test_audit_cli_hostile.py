"""`tenantgate audit verify|query|tail` on hostile logs, and a server whose stdout copy nobody reads.

Review findings: a FIFO in place of a file of the chain (or of its head file) hung all three commands; ids
and recovery fields holding terminal escapes were printed raw by verify (and planted lines by tail); a
stalled stdout reader kept SIGTERM from stopping the server. Every command runs in a subprocess with a
timeout: a regression fails, it does not hang the suite.
"""

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support.server import write_config
from tenantgate.audit import JsonlAuditSink
from tenantgate.audit.chain import parse, seal
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]
ESC = "\x1b[2K\x1b[1A\r\x1b[32mOK: all fine\x1b[0m\x1b]0;owned\x07"


class Record:
    def __init__(self, i):
        self.i = i

    def to_dict(self):
        return {"record_type": "decision", "decision_id": f"id-{self.i}", "decision": "DENY", "reason": "x"}


def _log(directory, count=3):
    path = directory / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(count):
        sink.write(Record(i))
    sink.close()
    return path


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    return subprocess.run([*TENANTGATE, *args], cwd=cwd, env=env, capture_output=True, timeout=30)


def _append_chained(path, fields):
    last = parse(path.read_bytes().splitlines(keepends=True)[-1])
    with open(path, "ab") as f:
        f.write(seal(fields, last.seq + 1, last.claimed_hash).line)


def test_verify_reports_a_fifo_in_place_of_a_rotated_file_instead_of_waiting_for_a_writer(tmp_path):
    log = _log(tmp_path)
    os.mkfifo(tmp_path / "audit.jsonl.7")
    for args in (["verify", str(log)], ["verify", "--all-workers", str(log)]):
        out = _cli("audit", *args, cwd=tmp_path)
        assert out.returncode == 4, out
        assert f"TAMPERED {tmp_path}/audit.jsonl.7:0: not a regular file (a FIFO)" in out.stdout.decode()
    report = json.loads(_cli("audit", "verify", "--json", str(log), cwd=tmp_path).stdout)
    assert [f["kind"] for f in report["findings"]] == ["not_regular"] and report["records"] == 3


def test_verify_reports_a_fifo_in_place_of_the_head_file_instead_of_waiting_for_a_writer(tmp_path):
    log = _log(tmp_path)
    head = tmp_path / "audit.jsonl.head"
    head.unlink()
    os.mkfifo(head)
    out = _cli("audit", "verify", str(log), cwd=tmp_path)
    assert out.returncode == 4, out
    assert "head file is not a regular file (a FIFO)" in out.stdout.decode()


@pytest.mark.parametrize("command", [["query"], ["tail", "-n", "100"]])
def test_query_and_tail_refuse_a_fifo_in_the_chain_with_one_line_and_exit_1(tmp_path, command):
    log = _log(tmp_path)
    os.mkfifo(tmp_path / "audit.jsonl.7")
    out = _cli("audit", *command, str(log), cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode() == f"tenantgate: cannot read audit log {tmp_path}/audit.jsonl.7: not a regular file " \
                                  "(a FIFO)\n"


def test_tail_refuses_a_fifo_as_the_live_file(tmp_path):
    os.mkfifo(tmp_path / "audit.jsonl")
    out = _cli("audit", "tail", str(tmp_path / "audit.jsonl"), cwd=tmp_path)
    assert out.returncode == 1 and b"not a regular file (a FIFO)" in out.stderr


def test_verify_names_a_directory_as_a_usage_error_not_tampering(tmp_path):
    out = _cli("audit", "verify", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 1 and b"is a directory" in out.stderr


def test_verify_escapes_terminal_sequences_from_ids_recovery_fields_and_unhashed_lines(tmp_path):
    log = _log(tmp_path)
    # A forged recovery record with valid chain fields: printed in the `recovered` and `past_head` notes.
    _append_chained(log, {"record_type": "audit_recovered", "decision_id": ESC, "reason": ESC, "evidence": ESC,
                          "set_aside_bytes": 0, "resumed_seq": 0, "head_seq": 0, "file": "audit.jsonl",
                          "time": "2026-01-01T00:00:00Z"})
    with open(log, "ab") as f:  # an unhashed line: its id is still shown (malformed)
        f.write(json.dumps({"record_type": "decision", "decision_id": ESC}).encode() + b"\n")
    out = _cli("audit", "verify", str(log), cwd=tmp_path)
    assert out.returncode == 4
    text = out.stdout.decode("ascii")
    assert not [ch for ch in text if ch != "\n" and not ch.isprintable()], text
    shown_id = r"[\x1b[2K\x1b[1A\r\x1b[32mOK: all fine\x1b[0m\x1b]0;owned\x07]"
    assert text.count(shown_id) == 3  # the recovered and past_head notes, the malformed line
    assert r"recovery (\x1b[2K" in text and r"set aside in \x1b[2K" in text
    as_json = _cli("audit", "verify", "--json", str(log), cwd=tmp_path).stdout
    assert b"\x1b" not in as_json  # a JSON escape; the value itself is kept:
    assert ESC in [finding["record_id"] for finding in json.loads(as_json)["findings"]]


def test_tail_and_query_escape_planted_lines_and_say_so(tmp_path):
    log = _log(tmp_path)
    stored = log.read_bytes()
    delete = b'{"decision":"DENY","decision_id":"del\x7f","record_type":"decision"}\n'  # valid JSON, raw DEL
    planted = b'{"decision_id":"\x1b[2J\x1b[32mOK\rall fine\xc2\x9b","record_type":"decision"}\n'
    with open(log, "ab") as f:
        f.write(delete + planted)
    out = _cli("audit", "tail", "-n", "6", str(log), cwd=tmp_path)
    assert out.returncode == 0
    lines = out.stdout.splitlines(keepends=True)
    assert b"".join(lines[:3]) == stored  # the sink's records as stored, byte for byte
    assert lines[3:] == [b'{"decision":"DENY","decision_id":"del\\u007f","record_type":"decision"}\n',
                         b'{"decision_id":"\\u001b[2J\\u001b[32mOK\\u000dall fine\\u009b","record_type":"decision"}\n']
    assert json.loads(lines[3]) == json.loads(delete)  # JSON stays the same JSON
    assert json.loads(lines[4])["decision_id"] == "\x1b[2J\x1b[32mOK\rall fine\x9b"
    assert b"2 line(s) held control or other non-printable characters" in out.stderr
    last = _cli("audit", "tail", "-n", "1", str(log), cwd=tmp_path).stdout  # a raw CR does not split a line
    assert last == lines[4]
    queried = _cli("audit", "query", str(log), cwd=tmp_path)  # the ESC line is not JSON: skipped, reported
    assert queried.stdout == stored + lines[3]
    assert b"\x1b" not in queried.stderr
    assert b"1 line(s) held control or other non-printable characters" in queried.stderr


def test_sigterm_stops_a_server_whose_stdout_copy_nobody_reads(tmp_path, issuer):
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "ckpt.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    audit = f'\n[audit]\nstdout = true\ncheckpoint_key_file = "{key_file}"\ncheckpoint_every = 10000\n'
    cfg = write_config(tmp_path, issuer.settings, extra=audit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    proc = subprocess.Popen([*TENANTGATE, "serve", "--config", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = proc.stdout.readline().decode()  # the banner; after it, nobody reads stdout
        assert "serving gRPC on " in banner, proc.stderr.read() if proc.poll() is not None else banner
        address = banner.split("serving gRPC on ")[1].split()[0]
        token = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            for n in range(60):  # 600 records, far more than a pipe holds: the stdout copy blocks
                items = [pb.CheckRequest(action="read", resource=pb.Resource(type="Invoice", id=f"i-{n}-{k}",
                                                                             tenant="acme")) for k in range(10)]
                stub.BatchCheck(pb.BatchCheckRequest(token=token, items=items), timeout=10)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)  # before the fix: never
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert code == 0, stderr
    assert "secondary audit sink still blocked" in stderr and "abandoned" in stderr
    log = tmp_path / "state" / "audit.jsonl"
    assert json.loads(log.read_text().splitlines()[-1])["record_type"] == "checkpoint"  # the closing checkpoint
    public = tmp_path / "ckpt.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    verified = _cli("audit", "verify", "--public-key", str(public), "--max-unsigned", "10000", str(log), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout


def _with_huge_line(directory, size):
    """A chained log whose middle holds a line of ``size`` bytes, sparse (NUL bytes: no disk used)."""
    log = _log(directory)
    lines = log.read_bytes().splitlines(keepends=True)
    with open(log, "wb") as f:
        f.write(lines[0])
        f.truncate(len(lines[0]) + size)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"".join(lines[1:]))
    return log


@pytest.mark.parametrize("command", [("verify",), ("query",), ("tail", "-n", "3")])
def test_a_huge_line_is_read_in_bounded_memory_and_time(tmp_path, command):
    # Hostile review: a 3 GB line (a sparse file of NULs) was read whole: verify and query died of MemoryError
    # (a traceback, under a 2.5 GB address-space limit), and tail copied its growing buffer for each 64 KiB
    # block it read backwards (quadratic: 6 s for a 30 MB line, minutes for a few hundred).
    log = _with_huge_line(tmp_path, 3 << 30)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31)); "
    code = limit + "import sys; from tenantgate.cli.main import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    done = subprocess.run([sys.executable, "-c", code, "audit", *command, str(log)], env=env, capture_output=True,
                          timeout=60)
    assert b"Traceback" not in done.stderr and b"MemoryError" not in done.stderr
    if command[0] == "verify":
        assert done.returncode == 4
        assert b"audit.jsonl:2:" in done.stdout and b"longer than" in done.stdout
    else:
        assert done.returncode == 0
        assert [json.loads(line)["decision_id"] for line in done.stdout.splitlines()] == ["id-0", "id-1", "id-2"]
