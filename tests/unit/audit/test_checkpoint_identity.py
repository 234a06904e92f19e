"""Checkpoints sign which chain they belong to (deployment id, worker number), and verify holds them to the chain
it knows it is verifying: its file name's worker, the deployment id it is given."""

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tenantgate.app import build_audit_sink
from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.chain import GENESIS_HASH, canonical, parse, seal
from tenantgate.audit.checkpoint import ChainIdentity, check_checkpoint, checkpoint_fields, key_id
from tenantgate.audit.files import head_path, worker_of, worker_path
from tenantgate.config import AuditSettings


def _write(path, key, *, worker=0, deployment="", records=4, event):
    sink = JsonlAuditSink(path, checkpoint_key=key, checkpoint_every=2, worker=worker, deployment=deployment)
    for i in range(records):
        sink.write(event(100 * worker + i))
    sink.close()
    return sink.path


def _checkpoints(path):
    return [parse(line).fields for line in path.read_bytes().splitlines() if b'"checkpoint"' in line]


def _problems(report):
    return [f for f in report.findings if f.tampered]


def _copy_chain(source, target):
    target.write_bytes(source.read_bytes())
    head_path(target).write_bytes(head_path(source).read_bytes())


@pytest.mark.parametrize("name", ["audit.jsonl", "audit", "audit.log.jsonl", "a-w.jsonl", "x-w0.jsonl"])
def test_worker_of_reverses_worker_path(name):
    for worker in (0, 1, 7, 12):
        assert worker_of(worker_path(Path("/var/log") / name, worker)) == worker
    assert worker_of(Path(name)) == 0


def test_checkpoints_name_the_worker_and_deployment_of_their_chain(tmp_path, event, signing_key):
    path = _write(tmp_path / "audit.jsonl", signing_key, worker=2, deployment="eu-1", event=event)
    assert path.name == "audit-w2.jsonl"
    checkpoints = _checkpoints(path)
    assert checkpoints and all((c["worker"], c["deployment"]) == (2, "eu-1") for c in checkpoints)
    report = verify_log(path, public_key=signing_key.public_key(), deployment="eu-1", max_unsigned=2)
    assert report.intact and report.signatures_verified == len(checkpoints)


def test_the_chain_identity_is_under_the_signature(tmp_path, event, signing_key):
    """Rewriting a checkpoint's worker (and re-hashing the chain) to pass worker 1's chain off as worker 0's
    breaks its signature."""
    other = _write(tmp_path / "audit.jsonl", signing_key, worker=1, event=event)
    lines, prev = [], GENESIS_HASH
    for number, line in enumerate(other.read_bytes().splitlines(), 1):
        fields = parse(line).fields
        for name in ("seq", "prev_hash"):
            fields.pop(name)
        if fields.get("record_type") == "checkpoint":
            fields.update(worker=0, chain_head=prev)
        sealed = seal(fields, number, prev)
        lines.append(sealed.line)
        prev = sealed.hash
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    head_path(path).write_text(json.dumps({"hash": prev, "seq": len(lines)}))
    assert verify_log(path).intact  # without the key, a consistent rewrite as always
    problem = _problems(verify_log(path, public_key=signing_key.public_key()))[0]
    assert (problem.kind, problem.line) == ("bad_checkpoint", 3)
    assert problem.message == "checkpoint signature does not verify"


def test_worker_0s_chain_in_worker_1s_place_is_caught_even_without_the_key(tmp_path, event, signing_key):
    first = _write(tmp_path / "audit.jsonl", signing_key, event=event)
    second = _write(tmp_path / "audit.jsonl", signing_key, worker=1, event=event)
    _copy_chain(first, second)
    problems = _problems(verify_log(second))
    assert problems and all(p.kind == "bad_checkpoint" for p in problems)
    assert "checkpoint signs worker 0's chain (no deployment id), not worker 1's" in problems[0].message
    assert verify_log(second, worker=0).intact  # told it is worker 0's (a renamed log), it is


def test_another_deployments_chain_is_caught_only_when_the_deployment_is_given(tmp_path, event, signing_key):
    """The documented limit: the deployment id binds only when the verifier is told which one to expect."""
    ours = _write(tmp_path / "ours" / "audit.jsonl", signing_key, deployment="eu-1", event=event)
    theirs = _write(tmp_path / "theirs" / "audit.jsonl", signing_key, deployment="us-1", event=event)
    _copy_chain(theirs, ours)
    public = signing_key.public_key()
    assert verify_log(ours, public_key=public).intact
    problem = _problems(verify_log(ours, public_key=public, deployment="eu-1"))[0]
    assert problem.kind == "bad_checkpoint"
    assert "signs worker 0's chain (deployment 'us-1'), not worker 0's chain (deployment 'eu-1')" in problem.message
    assert not verify_log(ours, public_key=public, deployment="").intact  # "": must have been written without one


def test_a_checkpoint_of_the_format_before_chain_identity_is_refused_naming_it(tmp_path, event, signing_key):
    """Logs signed before checkpoints named their chain are refused, with or without the key, saying why: such a
    checkpoint could be any chain's signed with the same key."""
    first = seal(event(1).to_dict(), 1, GENESIS_HASH)
    old = {"record_type": "checkpoint", "time": "2026-01-01T00:00:00.000Z", "count": 1, "chain_head": first.hash,
           "key_id": key_id(signing_key.public_key())}
    old["signature"] = base64.b64encode(signing_key.sign(canonical(old).encode("ascii"))).decode("ascii")
    checkpoint = seal(old, 2, first.hash)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(first.line + checkpoint.line)
    for public in (None, signing_key.public_key()):
        problem = _problems(verify_log(path, public_key=public))[0]
        assert (problem.kind, problem.line) == ("bad_checkpoint", 2)
        assert "checkpoint of the old format that does not name its chain" in problem.message


@pytest.mark.parametrize(("field", "value"), [("worker", True), ("worker", "0"), ("deployment", 0),
                                              ("deployment", None)])
def test_an_ill_typed_chain_identity_is_refused(signing_key, field, value):
    fields = checkpoint_fields(signing_key, count=1, chain_head=GENESIS_HASH, time="t", chain=ChainIdentity())
    fields[field] = value
    problem = check_checkpoint(fields, 2, GENESIS_HASH, None, worker=0, deployment=None)
    assert problem == "checkpoint fields are missing or ill-typed"


def test_the_configured_deployment_id_and_the_worker_are_signed(tmp_path, event, signing_key):
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    settings = AuditSettings(path=str(tmp_path / "audit.jsonl"), checkpoint_key_file=str(key_file),
                             checkpoint_every=1, deployment_id="eu-1")
    sink = build_audit_sink(settings, worker=3)
    sink.write(event(1))
    sink.close()
    (checkpoint, *_rest) = _checkpoints(tmp_path / "audit-w3.jsonl")
    assert (checkpoint["worker"], checkpoint["deployment"]) == (3, "eu-1")


def test_a_signed_checkpoint_carrying_a_field_its_signature_does_not_cover_is_refused(tmp_path, event, signing_key):
    """Found in review: the closing checkpoint given a forged decision's fields and re-hashed (head file too)
    verified with --public-key --from-genesis --max-unsigned, no record after the last checkpoint."""
    path = _write(tmp_path / "audit.jsonl", signing_key, event=event)
    *lines, last = path.read_bytes().splitlines(keepends=True)
    closing = parse(last)
    fields = {k: v for k, v in closing.fields.items() if k not in ("seq", "prev_hash")}
    fields.update(decision="ALLOW", decision_id="forged", principal_tenant="acme", resource_tenant="acme")
    forged = seal(fields, closing.seq, closing.prev_hash)
    path.write_bytes(b"".join(lines) + forged.line)
    head_path(path).write_text(json.dumps({"hash": forged.hash, "seq": forged.seq}))
    report = verify_log(path, public_key=signing_key.public_key(), from_genesis=True, max_unsigned=2)
    assert not report.intact
    problem = _problems(report)[0]
    assert (problem.kind, problem.seq) == ("bad_checkpoint", closing.seq)
    assert "no checkpoint is written with, which its signature does not cover: 'decision', 'decision_id'" in \
        problem.message
    fields = checkpoint_fields(signing_key, count=1, chain_head=GENESIS_HASH, time="t", chain=ChainIdentity())
    assert check_checkpoint(fields, 2, GENESIS_HASH, signing_key.public_key(), worker=0, deployment=None) == ""
