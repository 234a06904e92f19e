"""Every metric the Grafana dashboard and the alert rules use exists on a running server."""

import json
import re
from pathlib import Path

import grpc
import yaml

from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _referenced() -> set[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yaml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = set()
    for expr in exprs:
        for name in re.findall(r"\btenantgate_[a-z_]+", expr):
            for suffix in SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            names.add(name)
    return names


def test_every_referenced_metric_is_exported(tmp_path):
    issuer = TestIssuer(tmp_path)
    settings = config.load(write_config(tmp_path, issuer.settings), env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        pb_grpc.AuthorizerStub(channel).Check(pb.CheckRequest(token="x", action="read", resource=pb.Resource(
            type="Invoice", id="i", tenant="acme")))
        exported = {family.name for family in app.registry.collect()}
    referenced = _referenced()
    assert len(referenced) >= 10
    assert referenced - exported == set()


def test_alert_rules_have_the_fields_prometheus_needs():
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yaml").read_text())
    names = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert {"TenantGateBreakGlassGrantUsed", "TenantGateCrossTenantDenialSpike", "TenantGateAuditFailures",
            "TenantGatePolicyReloadFailed"} <= set(names)
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]


def test_metrics_are_served_on_a_bracketed_ipv6_address(tmp_path):
    # Review finding: `server.metrics_listen = "[::1]:PORT"` failed in the single-process server ("Name or
    # service not known"): the brackets went to the resolver.
    import socket
    import urllib.request

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    issuer = TestIssuer(tmp_path)
    settings = config.load(write_config(tmp_path, issuer.settings),
                           env={"TENANTGATE_SERVER_METRICS_LISTEN": f"[::1]:{port}"})
    with running_server(settings), urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as answer:
        assert b"tenantgate_" in answer.read()
