"""A suite principal may name its token's issuer: policies read it as `principal.issuer`. Review finding: the
runner minted every token with its own issuer, so a suite expecting a forbid on `principal.issuer` passed
while the server, given a token of another issuer, answered the opposite."""

import shutil
from pathlib import Path

from tenantgate.policy.testing import load_suites, run_suites

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
CORPORATE = "https://idp.acme.example"
FORBID = """@id("changes-only-via-corporate-idp")
forbid (principal, action == Action::"update", resource)
unless { principal.issuer == "https://idp.acme.example" };
"""
SUITE = """\
name: issuers
now: 2025-01-15T10:00:00Z
policies: {policies}
principals:
  erin: {{tenant: acme, sub: erin, roles: [editor], issuer: "https://idp.acme.example"}}
  eve: {{tenant: acme, sub: eve, roles: [editor]}}
cases:
  - name: the corporate issuer's editor updates
    principal: erin
    action: update
    resource: {{type: Invoice, id: inv-1, tenant: acme}}
    expect: {{decision: ALLOW, policy_ids: [editor-can-edit]}}
  - name: another issuer's editor does not
    principal: eve
    action: update
    resource: {{type: Invoice, id: inv-1, tenant: acme}}
    expect: {{decision: DENY, reason: policy_forbid, policy_ids: [changes-only-via-corporate-idp]}}
"""


def test_a_principal_names_its_issuer_and_policies_see_it(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(BUNDLED, policies)
    (policies / "zz-issuer.cedar").write_text(FORBID)
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(policies=policies))
    report = run_suites(load_suites([path]))
    assert (report.passed, report.failed) == (2, 0), [(c.case.name, c.mismatches, c.result.reason)
                                                      for _, c in report.cases()]
