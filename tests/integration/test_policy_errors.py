"""Policy-evaluation failures through the real server: nothing fails open."""

import shutil

import grpc

from support.issuers import TestIssuer
from support.server import BUNDLED_POLICIES, running_server, write_config
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

OVERFLOWING = """
@id("permit-everything-in-tenant")
permit (principal, action, resource);

// Passes validation, but errors at run time for amount_cents > 1 (integer overflow). Cedar skips an
// erroring policy, so without TenantGate's rule the permit above would win.
@id("forbid-large-invoices")
forbid (principal, action, resource is Invoice)
when { resource has amount_cents && resource.amount_cents * 9223372036854775807 > 1 };
"""


def test_a_forbid_that_errors_cannot_let_a_permit_win(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(BUNDLED_POLICIES / "schema.cedarschema", policies)
    (policies / "p.cedar").write_text(OVERFLOWING)
    issuer = TestIssuer(tmp_path)
    token = issuer.mint(tenant="acme", sub="alice")
    settings = config.load(write_config(tmp_path, issuer.settings, policies=policies), env={})
    with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AuthorizerStub(channel)

        def ask(amount):
            attrs = {"amount_cents": amount}
            req = pb.CheckRequest(token=token, action="read",
                                  resource=pb.Resource(type="Invoice", id="i", tenant="acme"))
            req.resource.attributes.update(attrs)
            return stub.Check(req)

        assert ask(0).decision == pb.ALLOW  # the forbid evaluates cleanly to false
        erroring = ask(2)
        assert (erroring.decision, erroring.reason) == (pb.DENY, "internal_error")
        assert list(erroring.policy_ids) == ["forbid-large-invoices"]
        assert "overflow" in erroring.message
