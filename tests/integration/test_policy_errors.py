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


# ------------------------------------------------------------ `tenantgate validate` as an author reads it


def _validate(policy_dir):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    return subprocess.run([sys.executable, "-m", "tenantgate.cli.main", "validate", "--policies", "policies"],
                          cwd=policy_dir.parent, env=env, capture_output=True, text=True, timeout=60)


def test_validate_reports_the_reviewed_mistakes_where_they_are(tmp_path):
    # Review findings, all in one run: a policy in a subdirectory nothing reads, an id hiding an escape sequence,
    # a duplicate id blamed on the wrong file, a parse error at the policy start without its id, and an
    # entities.json error on line 2 reported on line 1.
    policies = tmp_path / "policies"
    shutil.copytree(BUNDLED_POLICIES, policies)
    (policies / "tenants" / "acme" / "guards").mkdir()
    (policies / "tenants" / "acme" / "guards" / "no-reads.cedar").write_text(
        '@id("acme-no-reads")\nforbid (principal, action == Action::"read", resource);\n')
    (policies / "broken.cedar").write_text('@id("viewer-can-read")\npermit (principal, action, resource);\n')
    (policies / "esc.cedar").write_text('@id("ok\x1b[2K")\npermit (principal, action, resource);\n')
    (policies / "zz.cedar").write_text('// z\n@id("zz-ok")\npermit (principal, action, resource);\n\n'
                                       '@id("zz-bad")\npermit (principal, action, resource)\nwhen {\n  true\n}\n};\n')
    (policies / "entities.json").write_text('[\n  {"uid": }\n]\n')
    out = _validate(policies)
    assert out.returncode == 3, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "policies/tenants/acme/guards/no-reads.cedar:1: policy file in a directory TenantGate does not read: "
        "policies live in *.cedar directly in the policy directory (global) or in tenants/<tenant>/*.cedar "
        "(that tenant's); move it there, or give it another extension if it is not a policy",
        "policies/esc.cedar:1:1: [ok\\x1b[2K] policy ids may hold printable characters only; this one holds "
        "U+001B (a control or other non-printable character)",
        "policies/roles.cedar:4:1: [viewer-can-read] duplicate policy id: also defined at broken.cedar:1, which "
        "comes first in path order; rename one of them",
        "policies/zz.cedar:10:1: [zz-bad] parse error: unexpected token `}`",
        "policies/entities.json:2:11: not valid JSON: Expecting value",
    ], out.stdout
    assert "\x1b" not in out.stdout + out.stderr
