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
