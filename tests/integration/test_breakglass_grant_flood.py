"""A flood of grant requests over the real gRPC API (review finding: one operator created 11,328 PENDING grants in
20 s; ListGrants returns the newest 1,000, so the flood hid earlier real requests from approvers). Now an operator
has at most grants.max_pending_per_operator requests pending (more are FAILED_PRECONDITION, audited
grant.refused), and `tenantgate grant list` says when the answer reached the server's limit. A later finding: under
that cap, requesting and revoking in a loop still stored a grant and audit records per cycle, without bound; now
an operator makes at most grants.max_requests_per_operator_per_hour requests an hour, refused alike. SQLite store."""

import json

import grpc
import pytest

from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.cli import main
from tenantgate.core.breakglass import MAX_LISTED_GRANTS
from tenantgate.core.grants import Grant, GrantState
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

LIMIT_NOTE = "note: more grants matched than the newest 1,000 listed here"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flood")
    issuer = TestIssuer(tmp)
    extra = "[grants]\nmax_pending_per_operator = 2\nmax_requests_per_operator_per_hour = 4\n"
    settings = config.load(write_config(tmp, issuer.settings, extra=extra), env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        yield issuer, app, bg_grpc.BreakGlassStub(channel), address


def _request(stub, token, target="acme"):
    msg = bg.RequestGrantRequest(target_tenant=target, actions=["read"], reason="INC-1: wrong totals",
                                 ticket="INC-1", duration_seconds=900)
    return stub.RequestGrant(msg, metadata=[("authorization", f"Bearer {token}")])


def test_a_grant_request_beyond_the_operators_pending_limit_is_failed_precondition_and_audited(env):
    issuer, app, stub, _address = env
    olga = issuer.mint(tenant="platform", sub="olga", roles=["breakglass-operator"])
    _request(stub, olga)
    _request(stub, olga, target="globex")
    with pytest.raises(grpc.RpcError) as refused:
        _request(stub, olga, target="initech")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "grants.max_pending_per_operator (2)" in refused.value.details()
    records = [json.loads(line) for line in open(app.settings.audit.path) if '"grant_event"' in line]
    olgas = [(r["event"], r["target_tenant"]) for r in records if r["actor"] == "olga"]
    # The refusal names the tenant requested (``audit query --tenant initech`` lists it).
    assert olgas == [("grant.requested", "acme"), ("grant.requested", "globex"), ("grant.refused", "initech")]
    assert records[-1]["detail"].startswith("request: GrantConflict: the operator has 2 pending grant request(s)")


def test_a_request_and_revoke_loop_is_failed_precondition_at_the_hourly_limit_and_audited(env):
    issuer, app, stub, _address = env
    rita = issuer.mint(tenant="platform", sub="rita", roles=["breakglass-operator"])
    for _ in range(4):
        grant = _request(stub, rita)
        stub.RevokeGrant(bg.RevokeGrantRequest(grant_id=grant.id, reason="mistake"),
                         metadata=[("authorization", f"Bearer {rita}")])
    with pytest.raises(grpc.RpcError) as refused:
        _request(stub, rita)  # nothing is pending
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "grants.max_requests_per_operator_per_hour (4) allows: try again after" in refused.value.details()
    records = [json.loads(line) for line in open(app.settings.audit.path) if '"grant_event"' in line]
    ritas = [r["event"] for r in records if r["actor"] == "rita"]
    assert ritas == ["grant.requested", "grant.revoked"] * 4 + ["grant.refused"]
    assert records[-1]["detail"].startswith("request: GrantConflict: the operator made 4 grant request(s) in the "
                                            "last hour")
    stored = app.breakglass.store.list(None, None, app.breakglass.now(), 10 * MAX_LISTED_GRANTS)
    assert len([g for g in stored if g.operator == "rita"]) == 4


def test_the_cli_exits_alike_for_the_pending_cap_and_the_hourly_limit(env, capsys):
    issuer, _app, stub, address = env
    pia = issuer.mint(tenant="platform", sub="pia", roles=["breakglass-operator"])
    ruth = issuer.mint(tenant="platform", sub="ruth", roles=["breakglass-operator"])
    for _ in range(2):
        _request(stub, pia)
    for _ in range(4):
        stub.RevokeGrant(bg.RevokeGrantRequest(grant_id=_request(stub, ruth).id, reason="mistake"),
                         metadata=[("authorization", f"Bearer {ruth}")])
    command = ["grant", "request", "--server", address, "--target-tenant", "acme", "--actions", "read",
               "--reason", "INC-1: wrong totals", "--ticket", "INC-1", "--duration", "900", "--token"]
    capped = main.main([*command, pia])
    capped_err = capsys.readouterr().err
    limited = main.main([*command, ruth])
    limited_err = capsys.readouterr().err
    assert capped == limited != 0
    assert "FAILED_PRECONDITION" in capped_err and "grants.max_pending_per_operator (2)" in capped_err
    assert "FAILED_PRECONDITION" in limited_err and "grants.max_requests_per_operator_per_hour (4)" in limited_err


def _grant(number):
    return Grant(id=f"old-{number:04d}", operator="someone", operator_tenant="platform", target_tenant="acme",
                 actions=("read",), reason="history", ticket="INC-0", duration_seconds=60, state=GrantState.EXPIRED,
                 requested_at=1_600_000_000.0 + number, pending_until=1_600_000_060.0 + number)


def test_grant_list_says_when_the_answer_reached_the_servers_limit(env, capsys):
    issuer, app, _stub, address = env
    ada = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"])
    command = ["grant", "list", "--server", address, "--token", ada]
    assert main.main(command) == 0
    assert LIMIT_NOTE not in capsys.readouterr().err
    existing = len(app.breakglass.store.list(None, None, app.breakglass.now(), 10 * MAX_LISTED_GRANTS))
    for number in range(MAX_LISTED_GRANTS - existing):  # exactly the limit in all
        app.breakglass.store.create(_grant(number), lambda grant: None)
    # exactly the limit: everything is listed, nothing was left out
    assert main.main(command) == 0
    assert LIMIT_NOTE not in capsys.readouterr().err
    with grpc.insecure_channel(address) as channel:
        stub, metadata = bg_grpc.BreakGlassStub(channel), [("authorization", f"Bearer {ada}")]
        answer = stub.ListGrants(bg.ListGrantsRequest(), metadata=metadata)
        assert len(answer.grants) == MAX_LISTED_GRANTS and not answer.truncated
        app.breakglass.store.create(_grant(MAX_LISTED_GRANTS - existing), lambda grant: None)
        answer = stub.ListGrants(bg.ListGrantsRequest(), metadata=metadata)
        assert len(answer.grants) == MAX_LISTED_GRANTS and answer.truncated
    assert main.main(command) == 0
    out, err = capsys.readouterr()
    assert LIMIT_NOTE in err and "narrow the list with --state and --tenant" in err
    assert "old-0000" not in out  # the oldest are not in the answer
    assert main.main([*command, "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == MAX_LISTED_GRANTS and LIMIT_NOTE in err  # stdout stays JSON
    assert main.main([*command, "--state", "pending"]) == 0
    assert LIMIT_NOTE not in capsys.readouterr().err
