"""A suite file in a tenant's directory (`tenants/<tenant>/`, writable by that tenant) is that tenant's: it may only
decide about its own tenant's resources, never name `policies:`, and a link to another tenant's suite runs as
neither. Review finding: `tenantgate test policies` ran `tenants/acme/tests/probe.yaml`, which decided about globex's
documents as globex's users and printed globex's policy ids and its users' roles from globex's entity data."""

import shutil
from pathlib import Path

import pytest

from support.policy_suites import BUNDLED, cli
from tenantgate.policy.testing import PolicyDir, SuiteError, load_suites, run_suites

GLOBEX_POLICY = """\
@id("globex-secret-rule")
permit (principal is User, action == Action::"delete", resource is Document)
when { principal.roles.contains("globex-deleter") };
"""

GLOBEX_ENTITIES = '[{"uid": {"type": "User", "id": "gary"}, "attrs": {"roles": ["globex-deleter"]}, "parents": []}]'

SUITE = """\
name: {name}
now: 2025-01-15T10:00:00Z
{policies}principals:
  gary: {{tenant: globex, sub: gary}}
  sam: {{tenant: acme, sub: sam, roles: [support-agent]}}
  oscar: {{tenant: platform, sub: oscar, roles: [breakglass-operator]}}
cases:
"""

PROBE_GLOBEX = """\
  - name: probe globex
    principal: gary
    action: delete
    resource: {type: Document, id: doc-1, tenant: globex}
    context: {mfa: true}
    expect: {decision: DENY}
"""

OWN_CASES = """\
  - name: globex user on an acme ticket
    principal: gary
    action: comment
    resource: {type: Ticket, id: t-1, tenant: acme}
    expect: {decision: DENY, reason: cross_tenant}
  - name: acme support agent comments
    principal: sam
    action: comment
    resource: {type: Ticket, id: t-1, tenant: acme}
    expect: {decision: ALLOW, policy_ids: [acme-support-agents-comment]}
  - name: operator under a grant into acme
    principal: oscar
    action: read
    resource: {type: Ticket, id: t-1, tenant: acme}
    grant: {target_tenant: acme, actions: [read]}
    expect: {decision: ALLOW, reason: allow_break_glass}
"""

GRANT_INTO_GLOBEX = """\
  - name: operator on acme with a grant into globex
    principal: oscar
    action: read
    resource: {type: Ticket, id: t-1, tenant: acme}
    grant: {target_tenant: globex, actions: [read]}
    expect: {decision: DENY}
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root, ignore=shutil.ignore_patterns("tests"))
    (root / "tenants" / "globex").mkdir()
    (root / "tenants" / "globex" / "secret.cedar").write_text(GLOBEX_POLICY)
    (root / "tenants" / "globex" / "entities.json").write_text(GLOBEX_ENTITIES)
    return root


def _suite(directory: Path, *cases: str, name: str = "acme's own", policies: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name.replace(' ', '-')}.yaml"
    path.write_text(SUITE.format(name=name, policies=policies) + "".join(cases), encoding="utf-8")
    return path


def test_suite_in_tenant_directory_cannot_decide_about_another_tenants_document(policies):
    probe = _suite(policies / "tenants" / "acme" / "tests", PROBE_GLOBEX, name="probe")
    code, out, err = cli(str(policies), "--policies", str(policies))
    assert code == 1, out + err
    assert f"{probe}:" in err and "may only decide about tenant acme's resources" in err
    assert "globex-secret-rule" not in out + err
    with pytest.raises(SuiteError, match="may only decide about tenant acme's resources"):
        run_suites(load_suites([probe]), default=PolicyDir(policies))


def test_suite_in_tenant_directory_may_not_give_a_grant_into_another_tenant(policies):
    probe = _suite(policies / "tenants" / "acme" / "tests", GRANT_INTO_GLOBEX)
    with pytest.raises(SuiteError, match="may only give grants into tenant acme"):
        run_suites(load_suites([probe]), default=PolicyDir(policies))


def test_suite_in_tenant_directory_may_not_name_its_own_policy_set(policies, tmp_path):
    # `policies:` could point the runner anywhere (and away from the set it would be recognised in).
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(policies, elsewhere)
    probe = _suite(policies / "tenants" / "acme" / "tests", PROBE_GLOBEX, policies=f"policies: {elsewhere}\n")
    code, _out, err = cli(str(probe), "--config", str(_config(tmp_path, policies)))
    assert code == 1
    assert "may not name `policies:`" in err


def test_link_in_one_tenants_directory_to_anothers_suite_runs_as_neither(policies):
    theirs = _suite(policies / "tenants" / "globex" / "tests", PROBE_GLOBEX, name="globex's own")
    link = policies / "tenants" / "acme" / "theirs.yaml"
    link.symlink_to(theirs)
    with pytest.raises(SuiteError, match=r"directories of several tenants \(acme, globex\)"):
        run_suites(load_suites([link]), default=PolicyDir(policies))


def test_suite_in_linked_tenant_directory_is_still_that_tenants(policies, tmp_path):
    source = tmp_path / "src" / "acme"
    shutil.move(policies / "tenants" / "acme", source)
    (policies / "tenants" / "acme").symlink_to(source)
    probe = _suite(source / "tests", PROBE_GLOBEX)
    with pytest.raises(SuiteError, match="may only decide about tenant acme's resources"):
        run_suites(load_suites([probe]), default=PolicyDir(policies))


def test_tenants_suite_about_its_own_resources_runs_through_the_decision_path(policies):
    _suite(policies / "tenants" / "acme" / "tests", OWN_CASES)
    code, out, err = cli(str(policies / "tenants"), "--policies", str(policies))
    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith("3 passed")


def test_operators_suites_may_still_decide_about_every_tenant(policies):
    _suite(policies / "tests", PROBE_GLOBEX, OWN_CASES)
    report = run_suites(load_suites([policies / "tests"]), default=PolicyDir(policies))
    assert (report.passed, report.failed) == (3, 1)  # gary may delete with mfa: the probe's DENY is wrong


def _config(tmp_path: Path, policies: Path) -> Path:
    config = tmp_path / "tenantgate.toml"
    config.write_text(f'[policies]\ndir = "{policies}"\n[dev_issuer]\nenabled = true\n')
    return config
