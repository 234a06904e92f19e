"""Only ASCII decimal suffixes name rotated audit files.

Found in review: ``rotated_numbers`` took any suffix ``str.isdigit()`` accepts, so a stray file named
``audit.jsonl.\u00b2`` (superscript two) made ``int()`` raise ValueError in the middle of a rotation or of
``audit verify``, and ``audit.jsonl.\u0661`` (Arabic-Indic one) was read as rotated file 1.
"""

import pytest

from tenantgate.audit import JsonlAuditSink, verify_log
from tenantgate.audit.files import rotated_numbers, split_rotated

STRAY = ["audit.jsonl.\u00b2", "audit.jsonl.\u0661", "audit.jsonl.\uff13", "audit.jsonl.1\n", "audit.jsonl.07"]


@pytest.mark.parametrize("stray", STRAY, ids=ascii)
def test_a_stray_file_with_other_digits_is_not_a_rotated_file(tmp_path, stray):
    (tmp_path / stray).write_text("not an audit file\n")
    (tmp_path / "audit.jsonl.2").write_text("")
    assert rotated_numbers(tmp_path / "audit.jsonl") == [2]
    assert split_rotated(tmp_path / stray)[1] == 0


@pytest.mark.parametrize("stray", STRAY, ids=ascii)
def test_rotation_and_verify_ignore_a_stray_file_with_other_digits(tmp_path, event, stray):
    (tmp_path / stray).write_text("not an audit file\n")
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotate_bytes=2000, keep_files=3)
    for i in range(30):  # more rotations than files kept: pruning runs too
        sink.write(event(i))
    sink.close()
    assert sink.stats().rotations > 3
    assert (tmp_path / stray).read_text() == "not an audit file\n"
    assert verify_log(path).intact


def test_a_worker_number_ends_the_stem_and_a_longer_one_than_any_file_name_is_none():
    from pathlib import Path

    from tenantgate.audit.files import worker_of

    assert worker_of(Path("audit-w3.jsonl")) == 3
    assert worker_of(Path("audit-w3\n.jsonl")) == 0  # $ matched before the newline: taken for worker 3's
    assert worker_of(Path("audit-w" + "9" * 5000 + ".jsonl")) == 0  # int() raised ValueError


def test_an_audit_path_ending_in_more_digits_than_int_reads_is_no_traceback(tmp_path):
    from tenantgate import config
    from tenantgate.errors import ConfigError

    try:
        config.load(None, env={"TENANTGATE_AUDIT_PATH": str(tmp_path / ("audit-w" + "9" * 5000 + ".jsonl"))})
    except ConfigError:
        pass


def test_a_stray_name_ending_in_a_newline_is_no_worker_chain(tmp_path):
    from tenantgate.cli.audit import _worker_files

    (tmp_path / "audit-w2.jsonl\n").write_text("")
    assert _worker_files(tmp_path / "audit.jsonl") == []
