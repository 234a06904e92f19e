"""Hot reload against a running server: valid changes take effect, invalid ones never do, and a reload in
the middle of a stream of Checks loses no request and mixes no versions within one decision."""

import dataclasses
import gc
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from support.issuers import TestIssuer
from support.policies import ALLOW_READ, FORBID_READ, single_policy_dir, with_poll, write_atomically
from support.server import BUNDLED_POLICIES, running_server, write_config
from support.waiting import eventually
from tenantgate import app as application
from tenantgate import config
from tenantgate.background import settle_heap
from tenantgate.rpc.admin import HELD_BACK, QUARANTINED, REFUSED
from tenantgate.v1 import admin_pb2 as adm
from tenantgate.v1 import admin_pb2_grpc as adm_grpc
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


@pytest.fixture()
def policy_dir(tmp_path):
    return single_policy_dir(tmp_path)


def _serve(tmp_path, policy_dir, poll="0.05"):
    issuer = TestIssuer(tmp_path)
    path = with_poll(write_config(tmp_path, issuer.settings, policies=policy_dir), policy_dir, poll)
    return issuer, config.load(path, env={})


def _check(stub, token, tenant="acme"):
    return stub.Check(pb.CheckRequest(token=token, action="read",
                                      resource=pb.Resource(type="Invoice", id="i", tenant=tenant)))


def test_valid_change_takes_effect_and_invalid_change_is_refused(tmp_path, policy_dir):
    issuer, settings = _serve(tmp_path, policy_dir)
    token = issuer.mint(tenant="acme", sub="alice")
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        stub, admin = pb_grpc.AuthorizerStub(channel), adm_grpc.AdminStub(channel)
        v1 = _check(stub, token)
        assert v1.decision == pb.ALLOW
        write_atomically(policy_dir / "p.cedar", FORBID_READ)
        eventually(lambda: _check(stub, token).reason == "policy_forbid", "the new set answering")
        v2 = _check(stub, token).audit.policy_version
        assert v2 != v1.audit.policy_version

        write_atomically(policy_dir / "p.cedar", FORBID_READ + "permit (principal, action, resource) when {\n")
        eventually(lambda: not admin.Status(adm.StatusRequest()).last_reload_ok, "the refusal being reported")
        status = admin.Status(adm.StatusRequest())
        assert status.last_reload_message == REFUSED and status.policy_version == v2
        assert "p.cedar:5" not in status.last_reload_message  # details stay in the log (no token needed here)
        assert "p.cedar:5" in app.policies.last_result.message
        still = _check(stub, token)
        assert (still.reason, still.audit.policy_version) == ("policy_forbid", v2)
        from prometheus_client import generate_latest

        metrics = generate_latest(app.registry).decode()
        assert 'tenantgate_policy_reloads_total{result="refused"} 1.0' in metrics
        assert "tenantgate_policy_last_reload_ok 0.0" in metrics
        assert f'tenantgate_policy_info{{version="{v2}"}} 1.0' in metrics


def test_one_tenants_broken_file_holds_back_only_that_tenant_on_a_running_server(tmp_path, policy_dir):
    # Review finding: evil's broken file kept acme's emergency forbid from applying, on every worker.
    (policy_dir / "tenants" / "evil").mkdir(parents=True)
    (policy_dir / "tenants" / "acme").mkdir()
    write_atomically(policy_dir / "tenants" / "evil" / "own.cedar", '@id("evil-own")\nforbid (principal, '
                     'action == Action::"read", resource);\n')
    issuer, settings = _serve(tmp_path, policy_dir)
    alice, eve = issuer.mint(tenant="acme", sub="alice"), issuer.mint(tenant="evil", sub="eve")
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        stub, admin = pb_grpc.AuthorizerStub(channel), adm_grpc.AdminStub(channel)
        assert _check(stub, alice).decision == pb.ALLOW
        evil_read = _check(stub, eve, "evil")
        assert evil_read.reason == "policy_forbid"
        write_atomically(policy_dir / "tenants" / "evil" / "oops.cedar", "permit (principal, action, resource)\n")
        write_atomically(policy_dir / "tenants" / "acme" / "lockdown.cedar",
                         '@id("acme-lockdown")\nforbid (principal, action, resource is Invoice);\n')
        eventually(lambda: _check(stub, alice).reason == "policy_forbid", "acme's lockdown applying")
        status = admin.Status(adm.StatusRequest())
        assert (status.last_reload_ok, status.last_reload_message) == (False, HELD_BACK)
        again = _check(stub, eve, "evil")
        assert (again.reason, list(again.policy_ids)) == ("policy_forbid", ["evil-own"])  # its last valid files
        from prometheus_client import generate_latest

        metrics = generate_latest(app.registry).decode()
        assert 'tenantgate_policy_reloads_total{result="held_back"} 1.0' in metrics
        assert "tenantgate_policy_last_reload_ok 0.0" in metrics


def test_reload_during_a_stream_of_checks_loses_nothing_and_mixes_no_versions(tmp_path, policy_dir):
    issuer, settings = _serve(tmp_path, policy_dir, poll="0.02")
    token = issuer.mint(tenant="acme", sub="alice")
    answers, failures = [], []
    stop = threading.Event()
    with running_server(settings) as (address, app):
        def hammer():
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.AuthorizerStub(channel)
                while not stop.is_set():
                    try:
                        answers.append(_check(stub, token))
                    except grpc.RpcError as err:  # any RPC failure is a lost request
                        failures.append(err)

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        versions = set()
        for i in range(6):
            write_atomically(policy_dir / "p.cedar", FORBID_READ if i % 2 == 0 else ALLOW_READ)
            time.sleep(0.15)
            versions.add(app.policies.current().version)
        stop.set()
        for w in workers:
            w.join(30)
    assert failures == [] and len(answers) > 50
    by_version = {}
    for a in answers:
        # One decision, one version: the determining policy and the decision match the version recorded.
        by_version.setdefault(a.audit.policy_version, set()).add((a.decision, tuple(a.policy_ids)))
    assert len(by_version) >= 2
    for outcomes in by_version.values():
        assert outcomes in ({(pb.ALLOW, ("read-v1",))}, {(pb.DENY, ("no-read-v2",))}), by_version


def test_sighup_reloads_the_policies(tmp_path, policy_dir):
    issuer = TestIssuer(tmp_path)
    cfg = with_poll(write_config(tmp_path, issuer.settings, policies=policy_dir), policy_dir, 0)
    proc = subprocess.Popen([sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        address = banner.split("serving gRPC on ")[1].split()[0]
        token = issuer.mint(tenant="acme", sub="alice")
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            assert _check(stub, token).decision == pb.ALLOW
            write_atomically(policy_dir / "p.cedar", FORBID_READ)
            time.sleep(0.3)
            assert _check(stub, token).decision == pb.ALLOW  # polling is off: nothing changes by itself
            proc.send_signal(signal.SIGHUP)
            eventually(lambda: _check(stub, token).reason == "policy_forbid", "SIGHUP reload")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            proc.kill()


def test_a_configmap_style_symlink_swap_is_picked_up(tmp_path):
    # Kubernetes mounts a ConfigMap as <dir>/..data -> ..<timestamp>/ with <dir>/<file> -> ..data/<file>.
    mount = tmp_path / "mount"
    mount.mkdir()
    first, second = mount / "..v1", mount / "..v2"
    for version, text in ((first, ALLOW_READ), (second, FORBID_READ)):
        version.mkdir()
        shutil.copy(BUNDLED_POLICIES / "schema.cedarschema", version)
        (version / "p.cedar").write_text(text)
    (mount / "..data").symlink_to(first.name)
    for name in ("schema.cedarschema", "p.cedar"):
        (mount / name).symlink_to(f"..data/{name}")
    from tenantgate.policy import PolicyStore

    store = PolicyStore.load(mount)
    before = store.current().version
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(second.name)
    tmp_link.replace(mount / "..data")  # atomic swap, as kubelet does
    result = store.reload()
    assert result.ok and result.changed and store.current().version != before


def test_a_server_started_with_a_tenant_quarantined_denies_it_and_serves_the_others(tmp_path, policy_dir):
    # Review finding (session 16): start-up was strict, so one tenant's invalid file kept the server down.
    (policy_dir / "tenants" / "evil").mkdir(parents=True)
    write_atomically(policy_dir / "tenants" / "evil" / "oops.cedar", "permit (principal, action, resource)\n")
    issuer, settings = _serve(tmp_path, policy_dir)
    settings = dataclasses.replace(settings, policies=dataclasses.replace(
        settings.policies, invalid_tenants_at_start="quarantine"))
    alice, eve = issuer.mint(tenant="acme", sub="alice"), issuer.mint(tenant="evil", sub="eve")
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        stub, admin = pb_grpc.AuthorizerStub(channel), adm_grpc.AdminStub(channel)
        assert _check(stub, alice).decision == pb.ALLOW
        evil_read = _check(stub, eve, "evil")
        assert (evil_read.decision, evil_read.reason) == (pb.DENY, "tenant_policies_unavailable")
        assert evil_read.audit.decision_id and evil_read.audit.reason == "tenant_policies_unavailable"
        status = admin.Status(adm.StatusRequest())
        assert (status.last_reload_ok, status.last_reload_message) == (False, QUARANTINED.format(count=1))
        assert status.quarantined_tenants == 1
        from prometheus_client import generate_latest

        metrics = generate_latest(app.registry).decode()
        assert "tenantgate_policy_quarantined_tenants 1.0" in metrics
        assert "tenantgate_policy_last_reload_ok 0.0" in metrics
        (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
        eventually(lambda: _check(stub, eve, "evil").decision == pb.ALLOW, "evil served once its files are fixed")
        assert admin.Status(adm.StatusRequest()).last_reload_ok
        assert "tenantgate_policy_quarantined_tenants 0.0" in generate_latest(app.registry).decode()
    records = [json.loads(line) for line in Path(settings.audit.path).read_text().splitlines()]
    assert any(r.get("reason") == "tenant_policies_unavailable" for r in records)


def test_a_served_process_settles_its_heap_at_start_and_after_a_reload_that_replaced_the_set(tmp_path, policy_dir,
                                                                                              monkeypatch):
    """``settle_heap`` at start and after each reload that replaced the set: full collections no longer walk the
    loaded policies (a 90 ms pause at 10,000 tenants); what it frees is tested in unit/test_reloads.py."""
    settled: list[int] = []

    def spy() -> None:
        settled.append(1)
        settle_heap()

    monkeypatch.setattr(application, "settle_heap", spy)
    issuer, settings = _serve(tmp_path, policy_dir)
    token = issuer.mint(tenant="acme", sub="alice")
    try:
        with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            assert settled == [1] and gc.get_freeze_count() > 0
            assert _check(stub, token).decision == pb.ALLOW
            time.sleep(0.3)  # polls that find nothing changed settle nothing
            assert settled == [1]
            write_atomically(policy_dir / "p.cedar", FORBID_READ)
            eventually(lambda: _check(stub, token).reason == "policy_forbid", "the new set answering")
            eventually(lambda: len(settled) == 2, "the heap settled after the reload")
    finally:
        gc.unfreeze()
