"""10,000 tenants x 10 policies: loads within the memory bound and decides correctly for a sample.

Runs in a fresh process so its peak resident memory is the PDP's own. Speed is not asserted here (it is
reported by `make bench`); memory is a bound, not a timing.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from support.server import BUNDLED_POLICIES

TENANTS, PER_TENANT = 10_000, 10
MEMORY_BOUND_MIB = 400


def _write_tree(root: Path) -> None:
    root.mkdir()
    for f in BUNDLED_POLICIES.glob("*.cedar"):
        shutil.copy(f, root)
    shutil.copy(BUNDLED_POLICIES / "schema.cedarschema", root)
    tenants = root / "tenants"
    tenants.mkdir()
    for i in range(TENANTS):
        d = tenants / f"t{i:05d}"
        d.mkdir()
        d.joinpath("policies.cedar").write_text("\n".join(
            f'@id("t{i}-p{j}")\npermit (principal is User, action == Action::"approve", resource is Invoice)\n'
            f'when {{ principal.roles.contains("approver-{j}") && resource has status && '
            f'resource.status == "level-{j}" }};\n' for j in range(PER_TENANT)))


PROBE = textwrap.dedent('''
    import json, sys
    from tenantgate.core.engine import Engine
    from tenantgate.core.model import Principal, Resource, Reason
    from tenantgate.policy import load_policies
    compiled = load_policies(sys.argv[1])
    engine = Engine(compiled)  # default partition cache size
    wrong = 0
    sample = range(0, %d, 7)
    for i in sample:
        tenant = f"t{i:05d}"
        j = i %% %d
        me = Principal("User", "u", "u", tenant, (f"approver-{j}",), None, "iss", "t")
        ok = engine.evaluate(me, "approve", Resource("Invoice", "x", tenant),
                             {"tenant": tenant, "status": f"level-{j}"}, {"intent": ""})
        other = engine.evaluate(me, "approve", Resource("Invoice", "x", tenant),
                                {"tenant": tenant, "status": f"level-{(j + 1) %% %d}"}, {"intent": ""})
        wrong += ok.policy_ids != (f"t{i}-p{j}",) or other.reason is not Reason.NO_PERMIT
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so it would count pytest's own size.
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"policies": compiled.total_policies, "wrong": wrong, "sampled": len(sample),
                      "cached": engine.cached_partitions(),
                      "max_rss_mib": peak_kib / 1024}))
''') % (TENANTS, PER_TENANT, PER_TENANT)


def test_ten_thousand_tenants_load_within_the_memory_bound_and_decide_correctly(tmp_path):
    root = tmp_path / "policies"
    _write_tree(root)
    out = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    from tenantgate.policy import load_policies

    assert report["policies"] == TENANTS * PER_TENANT + load_policies(BUNDLED_POLICIES).policy_count  # global only
    assert report["wrong"] == 0 and report["sampled"] > 1000
    assert report["max_rss_mib"] <= MEMORY_BOUND_MIB, report
