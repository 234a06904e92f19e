"""Policy test suites written for the `tenantgate test` runner's tests, and the runner driven through its CLI wiring."""

import argparse
import io
from pathlib import Path

from support.server import BUNDLED_POLICIES as BUNDLED
from tenantgate.cli.policytest import add_command

HEADER = """\
name: {name}
now: 2025-01-15T10:00:00Z
policies: {policies}
principals:
  vera: {{tenant: acme, sub: vera, roles: [viewer]}}
  oscar: {{tenant: platform, sub: oscar, roles: [breakglass-operator]}}
cases:
"""

VIEWER_READS = """\
  - name: viewer reads own invoice
    principal: vera
    action: read
    resource: {type: Invoice, id: inv-1, tenant: acme}
    expect: {decision: ALLOW, reason: allow, policy_ids: [viewer-can-read]}
"""


def write_suite(directory: Path, *cases: str, name: str = "basics", file: str = "suite.yaml",
                policies: Path = BUNDLED) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file
    path.write_text(HEADER.format(name=name, policies=policies) + "".join(cases), encoding="utf-8")
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    """Run `test` through the real argparse wiring (add_command), capturing output."""
    parser = argparse.ArgumentParser(prog="tenantgate")
    add_command(parser.add_subparsers())
    args = parser.parse_args(["test", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, out, err)
    return code, out.getvalue(), err.getvalue()
