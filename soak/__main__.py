"""A soak you can run: `make soak` (or `python -m soak --minutes 3 --rate 300`).

Starts a real server (its own process, loopback, a throwaway issuer, a copy of the bundled policies, SQLite
grants, a fresh audit log), then drives mixed traffic at a steady rate for a bounded time: same-tenant
allows and denies, cross-tenant attempts (with the tenant planted in attributes, context and headers),
break-glass use (a grant requested, approved, used, then revoked midway), invalid tokens, BatchCheck,
and — when the server serves them — Envoy ext_authz and AuthZEN. A policy reload happens midway.

Report (stdout, markdown; exit 1 when an invariant fails):
- decisions per API and reason;
- cross-tenant allows without a grant (must be 0), allows under a revoked grant (must be 0);
- unhandled errors: RPC failures other than the intended ones (must be 0);
- answered decisions vs audit records (must be equal), and the audit chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.issuers import TestIssuer  # noqa: E402
from support.server import write_config  # noqa: E402
from tenantgate.audit import verify_log  # noqa: E402
from tenantgate.v1 import admin_pb2 as adm  # noqa: E402
from tenantgate.v1 import admin_pb2_grpc as adm_grpc  # noqa: E402
from tenantgate.v1 import authorizer_pb2 as pb  # noqa: E402
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc  # noqa: E402
from tenantgate.v1 import breakglass_pb2 as bg  # noqa: E402
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m soak")
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to drive traffic (max 30)")
    parser.add_argument("--rate", type=int, default=300, help="requests per second offered (max 2000)")
    args = parser.parse_args()
    minutes = min(max(args.minutes, 0.05), 30.0)
    rate = min(max(args.rate, 10), 2000)
    with tempfile.TemporaryDirectory(prefix="tenantgate-soak-") as tmp:
        return asyncio.run(_soak(Path(tmp), minutes * 60, rate))


async def _soak(tmp: Path, seconds: float, rate: int) -> int:
    policies = tmp / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("tests"))
    issuer = TestIssuer(tmp)
    cfg = write_config(tmp, issuer.settings, policies=policies)
    cfg.write_text(cfg.read_text().replace(f'dir = "{policies}"', f'dir = "{policies}"\npoll_interval_seconds = 0.5'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = proc.stdout.readline() if proc.stdout else ""
        if "serving gRPC on" not in banner:
            print("server did not start", file=sys.stderr)
            return 1
        address = banner.split("serving gRPC on ")[1].split()[0]
        exp = int(time.time() + seconds + 600)
        tokens = {
            "acme": issuer.mint(tenant="acme", sub="vera", roles=["viewer", "editor"], exp=exp),
            "globex": issuer.mint(tenant="globex", sub="gina", roles=["admin"], exp=exp),
            "operator": issuer.mint(tenant="platform", sub="oscar", roles=["breakglass-operator"], exp=exp),
            "approver": issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"], exp=exp),
            "expired": issuer.mint(tenant="acme", sub="vera", roles=["viewer"], iat=int(time.time()) - 900,
                                   nbf=int(time.time()) - 900, exp=int(time.time()) - 600),
        }
        report = await _drive(address, tokens, seconds, rate, policies)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    audit_path = tmp / "state" / "audit.jsonl"
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    decision_records = {r["decision_id"] for r in records if r.get("record_type") == "decision"}
    verified = verify_log(str(audit_path))
    missing = set(report["answered_ids"]) - decision_records
    ok = (report["cross_tenant_allows_without_grant"] == 0 and report["allows_after_revoke"] == 0
          and report["unhandled_errors"] == 0 and not missing and verified.intact)
    print(f"# TenantGate soak: {seconds:.0f} s at {rate} req/s offered\n")
    print("| api | reason | decisions |\n|---|---|---|")
    for (api, reason), count in sorted(report["by_reason"].items()):
        print(f"| {api} | {reason} | {count} |")
    print(f"\n- answered decisions: {len(report['answered_ids'])}; audit decision records: {len(decision_records)}; "
          f"answered without a record: {len(missing)}")
    print(f"- cross-tenant allows without a grant: {report['cross_tenant_allows_without_grant']}")
    print(f"- allows under the revoked grant after its revocation: {report['allows_after_revoke']}")
    print(f"- unhandled errors: {report['unhandled_errors']} {report['error_samples'][:3]}")
    print(f"- policy reload midway: {report['reload']}")
    print(f"- audit chain: {'verifies' if verified.intact else 'BROKEN'} ({verified.records} records)")
    print(f"\n{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


async def _drive(address: str, tokens: dict[str, str], seconds: float, rate: int, policies: Path) -> dict[str, Any]:
    by_reason: collections.Counter[tuple[str, str]] = collections.Counter()
    answered: list[str] = []
    state: dict[str, Any] = {"grant": None, "revoked_at": None, "cross_allows": 0, "after_revoke": 0,
                             "errors": 0, "samples": [], "reload": "not done"}
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(address) as channel:
        authz, glass = pb_grpc.AuthorizerStub(channel), bg_grpc.BreakGlassStub(channel)
        admin = adm_grpc.AdminStub(channel)

        def md(who: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {tokens[who]}")]

        async def one(i: int, now: float) -> None:
            kind = rng.choice(["same", "same", "cross", "planted", "glass", "bad", "batch"])
            try:
                if kind == "batch":
                    items = [_req("", "acme" if j % 2 else "globex", f"b{i}-{j}") for j in range(10)]
                    resp = await authz.BatchCheck(pb.BatchCheckRequest(token=tokens["acme"], items=items), timeout=5)
                    for item, result in zip(items, resp.results, strict=True):
                        _count("batch_check", item, result, "acme", by_reason, answered, state, now)
                    return
                token = {"same": "acme", "cross": "acme", "planted": "acme", "glass": "operator",
                         "bad": rng.choice(["expired", "garbage"])}[kind]
                tenant = {"same": "acme", "cross": "globex", "planted": "globex", "glass": "globex",
                          "bad": "acme"}[kind]
                req = _req(tokens.get(token, "not.a.token"), tenant, f"r{i}", planted=kind == "planted")
                metadata = [("x-tenant-id", "acme")] if kind == "planted" else None
                resp = await authz.Check(req, metadata=metadata, timeout=5)
                _count("check", req, resp, "platform" if token == "operator" else "acme", by_reason, answered, state,
                       now)
            except grpc.aio.AioRpcError as err:
                state["errors"] += 1
                state["samples"].append(f"{kind}: {err.code().name} {err.details()}")

        async def lifecycle() -> None:
            await asyncio.sleep(seconds * 0.2)
            grant = await glass.RequestGrant(bg.RequestGrantRequest(
                target_tenant="globex", actions=["read"], reason="soak", ticket="SOAK-1", duration_seconds=3600),
                metadata=md("operator"))
            await glass.ApproveGrant(bg.ApproveGrantRequest(grant_id=grant.id), metadata=md("approver"))
            state["grant"] = grant.id
            await asyncio.sleep(seconds * 0.3)
            before = (await admin.Status(adm.StatusRequest())).policy_version
            (policies / "zz-soak.cedar").write_text(
                '@id("soak-reload")\nforbid (principal, action == Action::"comment", resource);\n')
            for _ in range(100):
                await asyncio.sleep(0.1)
                after = (await admin.Status(adm.StatusRequest())).policy_version
                if after != before:
                    state["reload"] = f"{before} -> {after}"
                    break
            else:
                state["reload"] = "NOT picked up"
                state["errors"] += 1
            await asyncio.sleep(seconds * 0.2)
            await glass.RevokeGrant(bg.RevokeGrantRequest(grant_id=grant.id, reason="soak done"),
                                    metadata=md("approver"))
            state["revoked_at"] = time.monotonic()

        tasks = [asyncio.create_task(lifecycle())]
        start = time.monotonic()
        i = 0
        pending: set[asyncio.Task[None]] = set()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while i < due:
                task = asyncio.create_task(one(i, time.monotonic()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending, *tasks, return_exceptions=True)
    return {"by_reason": by_reason, "answered_ids": answered,
            "cross_tenant_allows_without_grant": state["cross_allows"], "allows_after_revoke": state["after_revoke"],
            "unhandled_errors": state["errors"], "error_samples": state["samples"], "reload": state["reload"]}


def _req(token: str, tenant: str, rid: str, planted: bool = False) -> Any:
    req = pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id=rid, tenant=tenant))
    if planted:
        req.context.update({"tenant": "acme"})
    return req


def _count(api: str, req: Any, resp: Any, caller_tenant: str, by_reason: collections.Counter[tuple[str, str]],
           answered: list[str], state: dict[str, Any], sent_at: float) -> None:
    by_reason[(api, resp.reason)] += 1
    answered.append(resp.decision_id)
    if resp.decision == pb.ALLOW and req.resource.tenant != caller_tenant:
        if not resp.audit.grant_id:
            state["cross_allows"] += 1
        elif (state["revoked_at"] is not None and sent_at > state["revoked_at"]
              and resp.audit.grant_id == state["grant"]):
            state["after_revoke"] += 1


if __name__ == "__main__":
    sys.exit(main())
