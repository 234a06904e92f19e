"""Certificate-bound tokens (RFC 8705 cnf.x5t#S256): checked in the core, on every adapter's path."""

import base64
import hashlib
import json
from pathlib import Path

import pytest

from support.issuers import FixedClock, TestIssuer, verifier_for
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import CheckInput, Decision, Reason, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.tenancy import check_token_binding
from tenantgate.policy import PolicyStore, load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
CERT_DER = b"a certificate, in DER"
CERT_SHA256 = hashlib.sha256(CERT_DER).hexdigest()
THUMBPRINT = base64.urlsafe_b64encode(hashlib.sha256(CERT_DER).digest()).rstrip(b"=").decode()
OTHER_SHA256 = hashlib.sha256(b"another certificate").hexdigest()


@pytest.fixture()
def parts(tmp_path):
    clock = FixedClock(1_700_000_000)
    issuer = TestIssuer(tmp_path, clock=clock)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=PolicyStore(load_policies(BUNDLED)).current,
                        audit=sink, clock=clock)
    return pdp, issuer, sink


def _check(token, cert="", **kw):
    return CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme"),
                      client_cert_sha256=cert, api="ext_authz", **kw)


def test_a_bound_token_with_its_certificate_is_allowed(parts):
    pdp, issuer, _sink = parts
    token = issuer.mint(roles=["viewer"], cnf={"x5t#S256": THUMBPRINT})
    assert pdp.decide(_check(token, CERT_SHA256)).decision is Decision.ALLOW
    assert pdp.decide(_check(token, CERT_SHA256.upper())).decision is Decision.ALLOW


def test_a_bound_token_without_a_certificate_is_denied_and_audited(parts):
    pdp, issuer, sink = parts
    result = pdp.decide(_check(issuer.mint(roles=["viewer"], cnf={"x5t#S256": THUMBPRINT})))
    assert (result.decision, result.reason) == (Decision.DENY, Reason.TOKEN_BINDING_MISMATCH)
    (record,) = [json.loads(line) for line in Path(sink.path).read_text().splitlines()]
    assert record["reason"] == "token_binding_mismatch" and record["subject"] == "alice"
    assert record["principal_tenant"] == "" and record["api"] == "ext_authz"


def test_a_bound_token_with_another_certificate_is_denied(parts):
    pdp, issuer, _sink = parts
    token = issuer.mint(roles=["viewer"], cnf={"x5t#S256": THUMBPRINT})
    assert pdp.decide(_check(token, OTHER_SHA256)).reason is Reason.TOKEN_BINDING_MISMATCH


def test_an_unbound_token_does_not_need_a_certificate(parts):
    pdp, issuer, _sink = parts
    assert pdp.decide(_check(issuer.mint(roles=["viewer"]))).decision is Decision.ALLOW
    assert pdp.decide(_check(issuer.mint(roles=["viewer"]), OTHER_SHA256)).decision is Decision.ALLOW


def test_binding_is_checked_before_anything_else_about_the_token(parts):
    pdp, issuer, _sink = parts
    token = issuer.mint(cnf={"x5t#S256": THUMBPRINT}, tenant=None)  # no valid tenant claim either
    assert pdp.decide(_check(token)).reason is Reason.TOKEN_BINDING_MISMATCH


def test_explain_shows_the_binding_as_the_token_step(parts):
    pdp, issuer, _sink = parts
    result = pdp.decide(_check(issuer.mint(cnf={"x5t#S256": THUMBPRINT}), OTHER_SHA256, explain=True))
    (step,) = result.trace
    assert (step.step, step.outcome) == ("token", "deny") and "token_binding_mismatch" in step.detail


@pytest.mark.parametrize("cnf", [
    "x5t",
    [THUMBPRINT],
    {},
    {"jkt": THUMBPRINT},  # a DPoP key binding: not a confirmation TenantGate can check, never accepted blindly
    {"x5t#S256": THUMBPRINT + "="},
    {"x5t#S256": THUMBPRINT[:-1]},
    {"x5t#S256": THUMBPRINT[:-1] + "B"},  # non-canonical final character
    {"x5t#S256": THUMBPRINT.replace(THUMBPRINT[0], "+", 1)},
    {"x5t#S256": CERT_SHA256},  # hex is not base64url
    {"x5t#S256": None},
    {"x5t#S256": 1},
])
def test_a_malformed_cnf_is_token_invalid(cnf):
    denial = check_token_binding({"cnf": cnf}, CERT_SHA256)
    assert denial is not None and denial.reason is Reason.TOKEN_INVALID


def test_the_canonical_thumbprint_of_any_certificate_is_accepted():
    for n in range(50):
        digest = hashlib.sha256(bytes([n])).digest()
        thumbprint = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert check_token_binding({"cnf": {"x5t#S256": thumbprint}}, digest.hex()) is None
