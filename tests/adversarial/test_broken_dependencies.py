"""Broken dependencies fail closed and heal without a restart: the policy directory replaced by garbage
mid-run.

(Other outages are covered next to their parts: the PostgreSQL grant store cut and restored through a proxy
in tests/adversarial/test_grant_store_outage.py, an unwritable audit log and SIGKILL under load in
tests/integration/test_operations.py, JWKS fetch failures in tests/unit/identity/test_jwks.py.)
"""

import os
import shutil

import grpc

from support.issuers import TestIssuer
from support.server import BUNDLED_POLICIES, running_server, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


def test_policy_directory_replaced_by_garbage_keeps_the_last_good_set_serving(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(BUNDLED_POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    issuer = TestIssuer(tmp_path)
    cfg = write_config(tmp_path, issuer.settings, policies=policies)
    cfg.write_text(cfg.read_text().replace(f'dir = "{policies}"', f'dir = "{policies}"\npoll_interval_seconds = 0.05'))
    token = issuer.mint(tenant="acme", sub="vera", roles=["viewer"])
    request = pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="i", tenant="acme"))
    with running_server(config.load(cfg, env={})) as (address, app), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        good = stub.Check(request)
        assert good.decision == pb.ALLOW
        # (Emptying every file is not garbage: an empty set is valid Cedar and denies everything, as written.)
        for kind in ("binary", "truncated", "no schema", "not a directory"):
            backup = tmp_path / "backup"
            shutil.copytree(policies, backup)
            if kind == "binary":
                for f in policies.glob("*.cedar*"):
                    f.write_bytes(os.urandom(512))
            elif kind == "truncated":
                for f in policies.glob("*.cedar"):
                    f.write_text(f.read_text()[: len(f.read_text()) // 2])
            elif kind == "no schema":
                (policies / "schema.cedarschema").unlink()
            else:
                shutil.rmtree(policies)
                policies.write_text("garbage where the directory was")
            eventually(lambda: not app.policies.last_result.ok, f"the {kind} set being refused")
            answer = stub.Check(request)
            assert (answer.decision, answer.audit.policy_version) == (pb.ALLOW, good.audit.policy_version), kind
            if policies.is_dir():
                shutil.rmtree(policies)
            else:
                policies.unlink()
            backup.rename(policies)
            eventually(lambda: app.policies.last_result.ok, f"recovery after the {kind} set")
        assert stub.Check(request).decision == pb.ALLOW
