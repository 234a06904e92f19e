"""A keyed sink signs a chain tail it inherited before its own records, so --max-unsigned N holds.

Found in review: after a restart (or records written by another writer) the inherited unsigned tail was
sealed only after the next batch, and the sink kept counting from its own last checkpoint, so
``verify --max-unsigned checkpoint_every`` (what the docs recommend) flagged legitimate logs.
"""

import json

from tenantgate.audit import JsonlAuditSink, verify_log


def _types(path):
    return [(r["record_type"], r.get("decision_id", r.get("count"))) for r in map(json.loads, path.open())]


def test_after_a_kill_the_restarted_sink_signs_the_inherited_tail_before_its_first_batch(tmp_path, event,
                                                                                         signing_key):
    path = tmp_path / "audit.jsonl"
    killed = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=5)
    for i in range(4):
        killed.write(event(i))  # then SIGKILL: no closing checkpoint
    restarted = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=5)
    assert restarted.write_many([event(10), event(11)]) == [None, None]
    restarted.close()
    assert _types(path) == [("decision", "id-0"), ("decision", "id-1"), ("decision", "id-2"), ("decision", "id-3"),
                            ("checkpoint", 4), ("decision", "id-10"), ("decision", "id-11"), ("checkpoint", 7)]
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=5)
    assert report.intact, report.findings


def test_records_of_an_unkeyed_writer_are_signed_before_the_keyed_sink_writes_again(tmp_path, event, signing_key):
    path = tmp_path / "audit.jsonl"
    server = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=5)
    for i in range(3):
        server.write(event(i))
    cli = JsonlAuditSink(path)  # e.g. `tenantgate check` with a config without the key
    cli.write(event(100))
    cli.write(event(101))
    cli.close()
    for i in range(3, 8):
        server.write(event(i))
    server.close()
    kinds = _types(path)
    assert kinds[5] == ("checkpoint", 5)  # right after the CLI's records, before the server's next one
    assert kinds[6:12] == [("decision", f"id-{i}") for i in range(3, 8)] + [("checkpoint", 11)]
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=5)
    assert report.intact, report.findings


def test_two_keyed_writers_taking_turns_keep_every_unsigned_run_within_checkpoint_every(tmp_path, event,
                                                                                         signing_key):
    path = tmp_path / "audit.jsonl"
    first = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=3)
    second = JsonlAuditSink(path, checkpoint_key=signing_key, checkpoint_every=3)
    for turn in range(6):  # batches (group commit, write_many) of two, each turn on the other writer's tail
        assert (first, second)[turn % 2].write_many([event(2 * turn), event(2 * turn + 1)]) == [None, None]
    first.close()
    second.close()
    report = verify_log(path, public_key=signing_key.public_key(), max_unsigned=3)
    assert report.intact and report.unsigned_tail == 0, report.findings
