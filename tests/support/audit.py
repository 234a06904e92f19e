"""Reading the JSONL audit log in tests."""

import json
from pathlib import Path


def audit_lines(app) -> dict[str, dict]:
    """decision_id -> decision record (without ``record_type``), read from the app's JSONL audit file."""
    records = {}
    for line in Path(app.settings.audit.path).read_text().splitlines():
        record = json.loads(line)
        for chain_field in ("seq", "prev_hash", "hash"):
            record.pop(chain_field, None)
        if record.pop("record_type") == "decision":
            records[record["decision_id"]] = record
    return records


def _records(path: Path) -> list[dict]:
    """Every record of a JSONL audit file, chain fields included."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def _kinds(report) -> list[str]:
    """The kinds of a ``verify_log`` report's findings, in order."""
    return [f.kind for f in report.findings]
