from pathlib import Path

from tenantgate.core.model import Reason
from tenantgate.errors import ERROR_TABLE, InvalidRequest, TenantGateError, TokenExpired, classify

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_every_reason_code_is_documented():
    assert [r.value for r in Reason if f"| `{r.value}` |" not in README] == []


def test_error_table_reasons_are_reason_codes():
    assert {reason for reason, _status in ERROR_TABLE.values()} <= {r.value for r in Reason}


def test_unknown_errors_fail_closed_as_internal():
    assert classify(ValueError("x")) == ("internal_error", "INTERNAL")
    assert classify(TenantGateError("x")) == ("internal_error", "INTERNAL")
    assert classify(TokenExpired("x")) == ("token_expired", "UNAUTHENTICATED")
    assert classify(InvalidRequest("x")) == ("invalid_request", "INVALID_ARGUMENT")
