"""fmt, explain and status as a policy author or operator runs them."""

import json
import os
import subprocess
import sys

import pytest

from support.server import BUNDLED_POLICIES

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]


def _run(args, cwd, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    return subprocess.run([*TENANTGATE, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def test_bundled_policies_are_formatted():
    out = _run(["fmt", "--check", str(BUNDLED_POLICIES)], BUNDLED_POLICIES.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_fmt_check_reports_and_fmt_rewrites(workdir):
    ugly = workdir / "policies" / "ugly.cedar"
    ugly.write_text('@id("x") permit(principal,action==Action::"read",resource)when{principal.roles.contains("a")};')
    check = _run(["fmt", "--check"], workdir)
    assert check.returncode == 1 and "would reformat" in check.stdout and "ugly.cedar" in check.stdout
    assert _run(["fmt"], workdir).returncode == 0
    assert _run(["fmt", "--check"], workdir).returncode == 0
    assert _run(["validate"], workdir).returncode == 0  # formatting kept it valid


def test_fmt_on_a_file_that_does_not_parse_says_where(workdir):
    # Review finding: fmt said only "cannot format: cannot parse input policies"; validate gave line and column.
    bad = workdir / "policies" / "bad.cedar"
    bad.write_text('@id("a")\npermit(principal, action, resource);\n@id("b")\npermit(principal, action resource);\n')
    out = _run(["fmt", str(bad)], workdir)
    assert out.returncode == 3
    assert "bad.cedar: cannot format: line 4, column 26: [b] parse error: unexpected token `resource`" in out.stderr


def test_explain_shows_each_step_and_the_determining_policy_location(workdir):
    token = _run(["token", "mint", "--tenant", "acme", "--sub", "erin", "--roles", "editor"], workdir).stdout.strip()
    out = _run(["explain", "--token", token, "--action", "update", "--resource-type", "Invoice", "--resource-id",
                "inv-1", "--resource-tenant", "acme", "--resource-attributes", '{"status": "paid"}', "--json"],
               workdir)
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    assert [s["step"] for s in report["steps"]] == ["token", "principal", "request", "tenant", "intent", "cedar"]
    (policy,) = report["steps"][-1]["policies"]
    assert policy["id"] == "paid-invoices-are-immutable" and policy["at"].startswith("guards.cedar:")
    assert token not in out.stdout

    cross = _run(["check", "--explain", "--token", token, "--action", "read", "--resource-type", "Invoice",
                  "--resource-id", "inv-1", "--resource-tenant", "globex"], workdir)
    assert cross.returncode == 2 and "DENY tenant" in cross.stdout and "cross_tenant" in cross.stdout


def test_explain_with_a_server_is_refused_clearly(workdir):
    out = _run(["check", "--explain", "--server", "127.0.0.1:1", "--token", "x", "--action", "read",
                "--resource-type", "Invoice", "--resource-id", "i", "--resource-tenant", "acme"], workdir)
    assert out.returncode == 1 and "in-process" in out.stderr


@pytest.mark.parametrize("command", ["check", "explain"])
def test_check_and_explain_on_invalid_policies_exit_3_like_validate(workdir, command):
    token = _run(["token", "mint", "--tenant", "acme", "--sub", "erin", "--roles", "editor"], workdir).stdout.strip()
    (workdir / "policies" / "broken.cedar").write_text("permit(principal, action, resource) when {")
    out = _run([command, "--token", token, "--action", "read", "--resource-type", "Invoice", "--resource-id", "i",
                "--resource-tenant", "acme"], workdir)
    assert out.returncode == 3 and out.stdout == ""
    assert "tenantgate: invalid policies:" in out.stderr and "broken.cedar:1" in out.stderr
