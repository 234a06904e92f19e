"""A call whose translation fails unexpectedly (a bug in a conversion) is still a decision: DENY
internal_error, with a decision id that names an audit record (review finding: it had none), on Check,
BatchCheck and ext_authz over a real server on a loopback port."""

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from support.audit import audit_lines
from support.envoy import EXT_AUTHZ_ROUTES, denied_body, envoy_request, http_status
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.rpc import convert, envoy_convert
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


def _broken(*_args, **_kwargs):
    raise RuntimeError("a conversion bug")


@pytest.fixture(scope="module")
def served(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("server")
    with running_server(config.load(write_config(tmp, issuer.settings, extra=EXT_AUTHZ_ROUTES), env={})) as (
            address, app), grpc.insecure_channel(address) as channel:
        yield app, pb_grpc.AuthorizerStub(channel), ext_grpc.AuthorizationStub(channel)


def _recorded(app, decision_id, api):
    record = audit_lines(app)[decision_id]
    assert (record["decision"], record["reason"], record["api"]) == ("DENY", "internal_error", api), record
    assert record["message"] == "internal error while translating the request"


def test_a_check_whose_translation_fails_is_an_audited_internal_error(served, issuer, monkeypatch):
    app, stub, _envoy = served
    monkeypatch.setattr(convert, "check_input", _broken)
    token = issuer.mint(tenant="acme", sub="alice", roles=["admin"])
    answer = stub.Check(pb.CheckRequest(token=token, action="read",
                                        resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme")))
    assert (answer.decision, answer.reason) == (pb.DENY, "internal_error")
    assert answer.audit.decision_id == answer.decision_id
    _recorded(app, answer.decision_id, "check")


def test_a_batch_item_whose_translation_fails_is_an_audited_internal_error_for_that_item(served, issuer,
                                                                                          monkeypatch):
    app, stub, _envoy = served
    token = issuer.mint(tenant="acme", sub="alice", roles=["admin"])
    real = convert.check_input

    def second_breaks(item, **kwargs):
        if item.resource.id == "inv-2":
            raise RuntimeError("a conversion bug")
        return real(item, **kwargs)

    monkeypatch.setattr(convert, "check_input", second_breaks)
    items = [pb.CheckRequest(action="read", resource=pb.Resource(type="Invoice", id=f"inv-{n}", tenant="acme"))
             for n in (1, 2, 3)]
    answers = stub.BatchCheck(pb.BatchCheckRequest(token=token, items=items)).results
    assert [a.reason for a in answers] == ["allow", "internal_error", "allow"]
    _recorded(app, answers[1].decision_id, "batch_check")


def test_an_ext_authz_request_whose_translation_fails_is_an_audited_internal_error(served, issuer, monkeypatch):
    app, _stub, envoy = served
    monkeypatch.setattr(envoy_convert, "check_input", _broken)
    token = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    answer = envoy.Check(envoy_request("GET", "/tenants/acme/invoices/inv-1", token=token))
    body = denied_body(answer)
    assert http_status(answer) == 403 and body["reason"] == "internal_error"
    _recorded(app, body["decision_id"], envoy_convert.API)
