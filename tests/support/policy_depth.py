"""Shared by the depth tests (tests/unit/core/test_policy_depth*.py): the bundled schema's text, a global file that
permits nothing, and `_in_subprocess`, which compiles one case in a subprocess bounded by a timeout, so a check that
regresses fails its test instead of crashing pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from support.server import BUNDLED_POLICIES as BUNDLED
from tenantgate.core.compiler import PolicySource

SCHEMA_TEXT = (BUNDLED / "schema.cedarschema").read_text()
GLOBAL = [PolicySource("g.cedar", "permit(principal, action, resource) when { false };")]
TIMEOUT = 120  # seconds; each case takes well under one with the check


_COMPILE = textwrap.dedent("""
    import json, sys
    from tenantgate.core.compiler import PolicySource, TenantLimits, compile_policies, format_policy_text
    from tenantgate.errors import PolicyError
    case = json.loads(sys.stdin.read())
    out = {}
    try:
        if case["kind"] == "schema":
            compile_policies(PolicySource("schema.cedarschema", case["text"]),
                             [PolicySource("g.cedar", "permit(principal, action, resource);")])
        elif case["kind"] == "entities":
            compile_policies(PolicySource("schema.cedarschema", case["schema"]),
                             [PolicySource("g.cedar", "permit(principal, action, resource) when { false };")],
                             {}, None, {"acme": PolicySource("tenants/acme/entities.json", case["text"])},
                             TenantLimits(max_entity_bytes=8 << 20))  # the chain check, not the size limit
        else:
            compile_policies(PolicySource("schema.cedarschema", case["schema"]),
                             [PolicySource("g.cedar", "permit(principal, action, resource) when { false };")],
                             {"acme": [PolicySource("tenants/acme/deep.cedar", case["text"])]})
        out["compile"] = "compiled"
    except PolicyError as err:
        out["compile"] = [str(d) for d in err.diagnostics] or [str(err)]
    if case["kind"] == "policy":
        try:
            format_policy_text(case["text"])
            out["fmt"] = "formatted"
        except PolicyError as err:
            out["fmt"] = str(err)
    print(json.dumps(out))
""")


def _in_subprocess(case: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _COMPILE], input=json.dumps(case), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"exit {done.returncode} (negative: killed by that signal): {done.stderr[-500:]}"
    result: dict[str, object] = json.loads(done.stdout)
    return result
