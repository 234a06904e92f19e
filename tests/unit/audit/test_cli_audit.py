"""`tenantgate audit verify|tail|query`: output, grouping of files into chains, and exit codes 0 / 4 / 1."""

import argparse
import json

import pytest
from cryptography.hazmat.primitives import serialization

from tenantgate.audit import JsonlAuditSink
from tenantgate.audit.files import chain_files
from tenantgate.cli import audit as audit_cli
from tenantgate.errors import ConfigError


def run(argv):
    parser = argparse.ArgumentParser(prog="tenantgate")
    audit_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def log(tmp_path, event):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=1500)
    for i in range(8):
        sink.write(event(i, principal_tenant="acme" if i % 2 else "globex"))
    sink.close()
    return path


def test_verify_an_intact_log_with_its_rotated_files_exits_0(log, capsys):
    assert run(["audit", "verify", str(log)]) == 0
    out = capsys.readouterr().out
    assert "OK: 8 records, seq 1..8" in out and "audit.jsonl.1" in out


def test_verify_a_modified_record_exits_4_naming_file_line_and_id(log, capsys):
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"DENY"', b'"ALOW"')
    log.write_bytes(b"".join(lines))
    assert run(["audit", "verify", str(log)]) == 4
    out = capsys.readouterr().out
    record = json.loads(lines[1])
    assert f"TAMPERED {log}:2: [{record['decision_id']}] seq {record['seq']}: content does not match" in out


def test_verify_json_reports_one_object_per_chain_including_worker_chains(log, tmp_path, event, capsys):
    JsonlAuditSink(log, worker=1).write(event(100))
    assert run(["audit", "verify", "--json", "--all-workers", str(log)]) == 0
    reports = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["records"] for r in reports] == [8, 1] and all(r["intact"] for r in reports)
    assert reports[1]["files"] == [str(tmp_path / "audit-w1.jsonl")]


def test_listed_files_of_one_chain_are_put_in_rotation_order(log, capsys):
    files = sorted(log.parent.glob("audit.jsonl*"))
    files = [f for f in files if not f.name.endswith(".head")]
    assert run(["audit", "verify", *map(str, files)]) == 0  # names, not argument order, decide
    assert run(["audit", "verify", "--in-order", *map(str, files)]) == 4  # live file first: chain broken


def test_verify_with_the_public_key_checks_checkpoint_signatures(tmp_path, event, signing_key, capsys):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=2)
    for i in range(5):
        sink.write(event(i))
    sink.close()
    public = tmp_path / "audit.pub.pem"
    public.write_bytes(signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    assert run(["audit", "verify", "--public-key", str(public), "--max-unsigned", "2", str(path)]) == 0
    assert "3 signature(s) verified" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="public key"):
        run(["audit", "verify", "--public-key", str(path), str(path)])


def test_verify_a_missing_file_or_bad_usage_exits_1(tmp_path, capsys):
    assert run(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 1
    assert "cannot read audit log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run(["audit", "verify", "--max-unsigned", "many", "x"])
    assert exit_info.value.code == 1


def test_tail_prints_the_last_records_as_stored(log, capsysbinary):
    assert run(["audit", "tail", "-n", "2", str(log)]) == 0
    stored = b"".join(f.read_bytes() for f in chain_files(log)).splitlines(keepends=True)
    assert capsysbinary.readouterr().out == b"".join(stored[-2:])


def test_query_filters_by_tenant_and_rejects_a_bad_time(log, capsysbinary):
    assert run(["audit", "query", str(log), "--tenant", "acme", "--decision", "deny"]) == 0
    records = [json.loads(x) for x in capsysbinary.readouterr().out.splitlines()]
    assert [r["decision_id"] for r in records] == ["id-1", "id-3", "id-5", "id-7"]
    assert run(["audit", "query", str(log), "--since", "last tuesday"]) == 1


def test_query_refuses_an_unknown_record_type(log, capsysbinary):
    # Review finding: `--record-type grant` (for grant_event) printed nothing and exited 0.
    assert run(["audit", "query", str(log), "--record-type", "decision,grant"]) == 1
    captured = capsysbinary.readouterr()
    assert captured.out == b"" and b"--record-type grant: not a record type" in captured.err
    assert run(["audit", "query", str(log), "--record-type", "decision", "--record-type", "grant_event,checkpoint",
                "--record-type", "audit_recovered,audit_probe"]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == 8


def test_the_default_path_comes_from_the_config(tmp_path, event, capsysbinary):
    config = tmp_path / "tenantgate.toml"
    config.write_text('[dev_issuer]\nenabled = true\n[audit]\npath = "logs/audit.jsonl"\n')
    JsonlAuditSink(tmp_path / "logs" / "audit.jsonl").write(event(1))
    assert run(["audit", "tail", "--config", str(config)]) == 0
    assert json.loads(capsysbinary.readouterr().out)["decision_id"] == "id-1"


def test_verify_with_every_log_file_deleted_but_the_head_exits_4(log, capsys):
    for file in chain_files(log):
        file.unlink()
    assert run(["audit", "verify", str(log)]) == 4  # the head file is evidence that records existed
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "no file of this log is left" in out and "seq 8" in out
    assert run(["audit", "verify", "--json", str(log)]) == 4
    assert json.loads(capsys.readouterr().out)["findings"][0]["kind"] == "missing"
    for name in ("audit.jsonl", "audit.jsonl.head"):
        assert run(["audit", "verify", str(log.parent / "gone" / name)]) == 1  # nothing at all: cannot read


def test_verify_names_records_past_the_head_in_a_notice_and_exits_0(log, event, capsys):
    head = log.with_name("audit.jsonl.head")
    lagging = head.read_bytes()
    JsonlAuditSink(log).write(event(99))
    head.write_bytes(lagging)  # as if killed between the append and the head update
    assert run(["audit", "verify", str(log)]) == 0
    out = capsys.readouterr().out
    assert "note     " in out and "1 record(s) after the head file's last recorded seq 8" in out
    assert run(["audit", "verify", "--json", str(log)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] and [f["kind"] for f in report["findings"]] == ["past_head"]


def test_verify_all_workers_reports_a_worker_whose_live_file_or_every_log_file_was_deleted(log, tmp_path, event,
                                                                                           capsys):
    """Found in review: workers were found by their live file only, so a worker whose log files were all
    deleted (its head file left) was skipped silently and verify --all-workers exited 0."""
    for worker in (1, 2):
        sink = JsonlAuditSink(log, worker=worker, rotate_bytes=1500)
        for i in range(6):
            sink.write(event(100 + i))
        sink.close()
    for file in chain_files(tmp_path / "audit-w1.jsonl"):
        file.unlink()  # worker 1: only audit-w1.jsonl.head is left
    (tmp_path / "audit-w2.jsonl").unlink()  # worker 2: its rotated files and head file are left
    assert run(["audit", "verify", "--json", "--all-workers", str(log)]) == 4
    reports = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["intact"] for r in reports] == [True, False, False]
    assert reports[1]["files"] == [] and [f["kind"] for f in reports[1]["findings"]] == ["missing"]
    assert reports[2]["files"] == [str(tmp_path / "audit-w2.jsonl.2"), str(tmp_path / "audit-w2.jsonl.1")]
    assert [f["kind"] for f in reports[2]["findings"]] == ["truncated"]  # the records of the deleted live file


def _workers(log, event, numbers):
    for worker in numbers:
        sink = JsonlAuditSink(log, worker=worker)
        for i in range(3):
            sink.write(event(100 * worker + i))
        sink.close()


def test_verify_all_workers_reports_a_worker_deleted_between_others_as_missing(tmp_path, event, capsys):
    """Found in review: with every file of worker 1 deleted (head file included) but worker 2's chain left,
    verify --all-workers said OK for workers 0 and 2 and did not mention worker 1 (exit 0)."""
    log = tmp_path / "audit.jsonl"
    _workers(log, event, (0, 1, 2))
    for file in tmp_path.glob("audit-w1.jsonl*"):
        file.unlink()
    assert run(["audit", "verify", "--all-workers", str(log)]) == 4
    out = capsys.readouterr().out
    assert f"TAMPERED {tmp_path / 'audit-w1.jsonl'}:0: worker 1's chain has no file left" in out
    assert run(["audit", "verify", "--json", "--all-workers", str(log)]) == 4
    reports = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["intact"] for r in reports] == [True, False, True]
    assert reports[1]["files"] == [] and [f["kind"] for f in reports[1]["findings"]] == ["missing"]


def test_verify_all_workers_reports_a_deleted_worker_0_chain_as_missing_not_as_an_error(tmp_path, event, capsys):
    """Found in review: the same deletion of worker 0's chain exited 1 (cannot read) instead of 4."""
    log = tmp_path / "audit.jsonl"
    _workers(log, event, (0, 1, 2))
    for file in tmp_path.glob("audit.jsonl*"):
        file.unlink()
    assert run(["audit", "verify", "--all-workers", str(log)]) == 4
    out = capsys.readouterr().out
    assert f"TAMPERED {log}:0: worker 0's chain has no file left" in out and out.count("OK: 3 records") == 2
    assert run(["audit", "verify", str(log)]) == 1  # without --all-workers nothing says it existed
    assert run(["audit", "verify", "--all-workers", str(tmp_path / "other.jsonl")]) == 1  # no chain at all


def _public_key_file(tmp_path, signing_key):
    public = tmp_path / "audit.pub.pem"
    public.write_bytes(signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(public)


def _signed_workers(tmp_path, event, signing_key, workers=2, deployment=""):
    log = tmp_path / "audit.jsonl"
    for worker in range(workers):
        sink = JsonlAuditSink(log, checkpoint_key=signing_key, checkpoint_every=2, worker=worker,
                              deployment=deployment)
        for i in range(4):
            sink.write(event(100 * worker + i))
        sink.close()
    return log


def test_verify_all_workers_catches_a_workers_chain_replaced_by_another_workers(tmp_path, event, signing_key, capsys):
    log = _signed_workers(tmp_path, event, signing_key)
    public = _public_key_file(tmp_path, signing_key)
    assert run(["audit", "verify", "--all-workers", "--public-key", public, str(log)]) == 0
    worker1 = tmp_path / "audit-w1.jsonl"
    for name in ("", ".head"):
        (tmp_path / f"audit-w1.jsonl{name}").write_bytes((tmp_path / f"audit.jsonl{name}").read_bytes())
    capsys.readouterr()
    assert run(["audit", "verify", "--all-workers", "--public-key", public, str(log)]) == 4
    out = capsys.readouterr().out
    assert f"TAMPERED {worker1}:3: seq 3: checkpoint signs worker 0's chain (no deployment id), not worker 1's" in out


def test_verify_worker_says_whose_chain_a_renamed_log_is(tmp_path, event, signing_key, capsys):
    _signed_workers(tmp_path, event, signing_key)
    public = _public_key_file(tmp_path, signing_key)
    archived = tmp_path / "archive" / "host-a-2026-12.jsonl"
    archived.parent.mkdir()
    archived.write_bytes((tmp_path / "audit-w1.jsonl").read_bytes())
    assert run(["audit", "verify", "--public-key", public, str(archived)]) == 4  # by its name: worker 0's
    assert "say whose it is, verify --worker" in capsys.readouterr().out
    assert run(["audit", "verify", "--public-key", public, "--worker", "1", str(archived)]) == 0
    assert run(["audit", "verify", "--worker", "1", "--all-workers", str(archived)]) == 1
    assert run(["audit", "verify", "--worker", "-1", str(archived)]) == 1
    assert run(["audit", "verify", "--worker", "1", str(archived), str(tmp_path / "audit.jsonl")]) == 1
    assert "--worker names one chain's worker" in capsys.readouterr().err


def test_verify_deployment_requires_checkpoints_to_sign_that_deployment_id(tmp_path, event, signing_key, capsys):
    log = _signed_workers(tmp_path, event, signing_key, workers=1, deployment="eu-1")
    public = _public_key_file(tmp_path, signing_key)
    assert run(["audit", "verify", "--public-key", public, "--deployment", "eu-1", str(log)]) == 0
    assert run(["audit", "verify", "--public-key", public, "--deployment", "us-1", str(log)]) == 4
    assert "not worker 0's chain (deployment 'us-1')" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["eu 1", "eu-1\x1b[2J", "é", "x" * 129], ids=repr)
def test_verify_refuses_a_deployment_no_server_can_have(tmp_path, event, signing_key, capsys, value):
    """The config refuses such an audit.deployment_id, so no checkpoint signs it: a usage error saying so, not
    TAMPERED on every checkpoint of an intact log (what a typo such as a space used to get)."""
    log = _signed_workers(tmp_path, event, signing_key, workers=1, deployment="eu-1")
    public = _public_key_file(tmp_path, signing_key)
    assert run(["audit", "verify", "--public-key", public, "--deployment", value, str(log)]) == 1
    captured = capsys.readouterr()
    assert "--deployment must be an audit.deployment_id" in captured.err and "TAMPERED" not in captured.out
    assert "\x1b" not in captured.err  # escaped, never sent to the terminal
    assert run(["audit", "verify", "--public-key", public, "--deployment", "", str(log)]) == 4  # "" = no id: valid


def test_verify_all_workers_holds_a_workers_path_to_the_worker_its_name_says(tmp_path, event, signing_key, capsys):
    """Found in review: a PATH given to --all-workers was taken for worker 0's whatever its name, so
    `--all-workers audit-w1.jsonl` failed worker 1's own chain and passed worker 0's copied in its place."""
    _signed_workers(tmp_path, event, signing_key)
    public = _public_key_file(tmp_path, signing_key)
    worker1 = tmp_path / "audit-w1.jsonl"
    assert run(["audit", "verify", "--all-workers", "--public-key", public, str(worker1)]) == 0
    for name in ("", ".head"):
        (tmp_path / f"audit-w1.jsonl{name}").write_bytes((tmp_path / f"audit.jsonl{name}").read_bytes())
    capsys.readouterr()
    assert run(["audit", "verify", "--all-workers", "--public-key", public, str(worker1)]) == 4
    assert "checkpoint signs worker 0's chain (no deployment id), not worker 1's" in capsys.readouterr().out


def test_verify_all_workers_fills_no_gap_up_to_a_worker_number_no_server_runs(tmp_path, event, capsys):
    """Found in review: every worker number below the highest found was verified as a missing chain, so one
    empty file named audit-w99999999999999.jsonl.head made verify --all-workers run out of memory. Gaps are
    filled only up to the highest worker a server runs (63); a worker found beyond it is verified itself."""
    log = tmp_path / "audit.jsonl"
    _workers(log, event, (0, 1))
    (tmp_path / "audit-w1000.jsonl.head").write_bytes(b"")
    assert run(["audit", "verify", "--json", "--all-workers", str(log)]) == 4
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    worker1 = str(tmp_path / "audit-w1.jsonl")
    assert [(r["files"], r["intact"]) for r in reports] == [([str(log)], True), ([worker1], True), ([], False)]
    assert reports[2]["findings"][0]["kind"] == "head_malformed"
    (tmp_path / "audit-w1000.jsonl.head").unlink()
    (tmp_path / "audit-w3.jsonl.head").write_bytes(b"")  # a gap below 63 is still every missing worker's
    assert run(["audit", "verify", "--json", "--all-workers", str(log)]) == 4
    kinds = [[f["kind"] for f in json.loads(line)["findings"]] for line in capsys.readouterr().out.splitlines()]
    assert kinds[2:] == [["missing"], ["head_malformed"]]


def test_a_live_path_named_twice_is_still_its_whole_chain(tmp_path, event, capsys):
    """Found in review: a live PATH named twice, or a worker's named beside --all-workers (which adds it too), was
    read alone, its rotated files unread: a record modified in one of them passed (exit 0, a `start` note)."""
    log = tmp_path / "audit.jsonl"
    for worker in (0, 1):
        sink = JsonlAuditSink(log, worker=worker, rotate_bytes=1500)
        for i in range(8):
            sink.write(event(100 * worker + i))
        sink.close()
    worker1 = tmp_path / "audit-w1.jsonl"
    rotated = tmp_path / "audit-w1.jsonl.1"
    rotated.write_bytes(rotated.read_bytes().replace(b'"DENY"', b'"ALLOW"', 1))
    assert run(["audit", "verify", str(worker1)]) == 4
    assert run(["audit", "verify", str(worker1), str(worker1)]) == 4
    assert run(["audit", "verify", "--all-workers", str(log), str(worker1)]) == 4
    out = capsys.readouterr().out
    assert out.count(f"TAMPERED {rotated}:") == 3 and "the chain starts at seq" not in out


def test_verify_refuses_in_order_with_all_workers(log, capsys):
    """Found in review: --in-order read the PATHs alone and --all-workers was silently not done (exit 0)."""
    assert run(["audit", "verify", "--in-order", "--all-workers", str(log)]) == 1
    assert "not with --all-workers" in capsys.readouterr().err
