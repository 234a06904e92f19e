"""Regression tests from the second hostile review (break-glass, partitions/reload, mTLS, Admin.Status, policy
loading). Each asserts the secure behaviour and failed before its fix: a reload mixing two ConfigMap versions,
Health.Watch slot exhaustion by a caller outside allowed_callers, Admin.Status disclosing other tenants'
diagnostics, an empty tenant @id, control characters in grant text, grants not bound to their issuer, and a global
policy "pinning" a tenant without comparing it.

The ext_authz findings of the same review (reserved headers, method and path overrides, traversal) are in
test_review_regressions_ext_authz.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.certs import TestCA
from support.issuers import FixedClock, TestIssuer, verifier_for
from support.server import BUNDLED_POLICIES, running_server, write_config
from tenantgate import config
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.breakglass import BreakGlass, GrantRequest, GrantRules
from tenantgate.core.model import CheckInput, Decision, Principal, Reason, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.errors import GrantInvalid, PolicyError
from tenantgate.grants.sqlite import SqliteGrantStore
from tenantgate.policy import PolicyStore, load_policies
from tenantgate.policy import loader as policy_loader
from tenantgate.v1 import admin_pb2, admin_pb2_grpc
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

NOW = 1_700_000_000


def _copy_bundled(dst: Path) -> Path:
    shutil.copytree(BUNDLED_POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    return dst


def _issuer(directory: Path, **kw) -> TestIssuer:
    directory.mkdir(parents=True, exist_ok=True)
    return TestIssuer(directory, **kw)


def _pdp(tmp_path: Path, store: PolicyStore):
    clock = FixedClock(NOW)
    issuer = _issuer(tmp_path / "issuer", clock=clock)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), engine=store.current, audit=sink, clock=clock)
    return pdp, issuer


# ------------------------------------------------------------------------------------------------------------
# F1  A tenant policy annotated @id("") passes load/reload, then every decision on that tenant's resources is
#     internal_error: the "invalid set never takes effect" promise is broken (core/compiler.py:265, 334-337).


def test_f1_reload_refuses_tenant_policy_with_empty_id_annotation(tmp_path):
    root = _copy_bundled(tmp_path / "policies")
    store = PolicyStore.load(root)
    pdp, issuer = _pdp(tmp_path, store)
    viewer = issuer.mint(tenant="acme", roles=["viewer"])
    read = CheckInput(token=viewer, action="read", resource=Resource("Invoice", "inv-1", "acme"))
    assert pdp.decide(read).decision is Decision.ALLOW

    (root / "tenants" / "acme" / "extra.cedar").write_text(
        '@id("")\npermit (principal, action == Action::"comment", resource is Ticket);\n')
    result = store.reload(force=True)

    # Expected: refused at reload, the last good set keeps answering.
    after = pdp.decide(read)
    assert (result.ok, after.decision, after.reason) == (False, Decision.ALLOW, Reason.ALLOW), (
        f"reload ok={result.ok}; acme viewer read is now {after.decision.value}/{after.reason.value}: {after.message}")


# ------------------------------------------------------------------------------------------------------------
# F2  Reload reads a ConfigMap-style directory file by file through the `..data` symlink; a kubelet swap
#     between two reads yields a set that is neither the old nor the new version (here: no paid-invoice guard
#     at all), and it is served (policy/loader.py:32,45; policy/store.py:143-165).


_GUARD = '''@id("paid-invoices-are-immutable")
forbid (principal, action in [Action::"update", Action::"delete"], resource is Invoice)
when { resource has status && resource.status == "paid" };
'''
_EDITOR_PLAIN = '''@id("editor-can-edit")
permit (principal is User, action in [Action::"update", Action::"comment", Action::"share"], resource)
when { principal.roles.containsAny(["editor", "admin"]) };
'''
_EDITOR_GUARDED = _EDITOR_PLAIN.replace("};", '} unless { resource has status && resource.status == "paid" };')
_HARMLESS = '@id("noop-guard")\nforbid (principal, action == Action::"approve", resource is Invoice) when { false };\n'


def _configmap_version(root: Path, name: str, guards: str, roles: str) -> None:
    version = root / name
    version.mkdir()
    shutil.copy(BUNDLED_POLICIES / "schema.cedarschema", version / "schema.cedarschema")
    (version / "guards.cedar").write_text(guards)
    (version / "roles.cedar").write_text(roles)


def _configmap(tmp_path: Path) -> tuple[Path, PolicyStore]:
    """A ConfigMap-style policy mount serving ..v1, with ..v2 beside it, and its loaded store.

    v1: the paid guard is inline in roles.cedar. v2: it moved to guards.cedar. Both protect paid invoices.
    """
    root = tmp_path / "policies"
    root.mkdir()
    _configmap_version(root, "..v1", _HARMLESS, _EDITOR_GUARDED)
    _configmap_version(root, "..v2", _GUARD + "\n" + _HARMLESS, _EDITOR_PLAIN)
    os.symlink("..v1", root / "..data")
    for name in ("schema.cedarschema", "guards.cedar", "roles.cedar"):
        os.symlink(f"..data/{name}", root / name)
    return root, PolicyStore.load(root)


def test_f2_reload_never_serves_a_mix_of_two_configmap_versions(tmp_path, monkeypatch):
    root, store = _configmap(tmp_path)
    pdp, issuer = _pdp(tmp_path, store)
    editor = issuer.mint(tenant="acme", roles=["editor"])
    paid = CheckInput(token=editor, action="update",
                      resource=Resource("Invoice", "inv-1", "acme", {"status": "paid"}))
    assert pdp.decide(paid).decision is Decision.DENY

    real_read = policy_loader._read

    def read_then_swap(path, base):
        source = real_read(path, base)
        if path.name == "guards.cedar":  # kubelet swaps ..data atomically, but between our two reads
            os.symlink("..v2", root / "..data_tmp")
            os.replace(root / "..data_tmp", root / "..data")
        return source

    monkeypatch.setattr(policy_loader, "_read", read_then_swap)
    result = store.reload(force=True)
    monkeypatch.setattr(policy_loader, "_read", real_read)

    after = pdp.decide(paid)
    assert after.decision is Decision.DENY, (
        f"reload ok={result.ok} served version {result.version}, a mix of ..v1/guards.cedar and ..v2/roles.cedar: "
        f"an editor may now update a PAID invoice ({after.reason.value})")


# ------------------------------------------------------------------------------------------------------------
# F3  allowed_callers exempts every grpc.health.v1.Health method, including the server-streaming Watch. A peer
#     with any certificate of the mesh CA (not on the list) parks max_concurrent_rpcs Watch streams and every
#     allowed caller's Check is RESOURCE_EXHAUSTED (rpc/tls.py:34,169; rpc/server.py:82).


def test_f3_caller_outside_allowed_callers_cannot_exhaust_rpc_slots_with_health_watch(tmp_path, ):
    envoy_id = "spiffe://mesh.test/ns/edge/sa/envoy"
    mesh = TestCA("mesh")
    ca = mesh.write(tmp_path, "mesh-ca.crt")
    server = mesh.issue("tenantgate", dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "srv")
    envoy = mesh.issue("envoy", uris=[envoy_id]).write(tmp_path, "envoy")
    intruder = mesh.issue("intruder", uris=["spiffe://mesh.test/ns/other/sa/app"]).write(tmp_path, "intruder")
    issuer = _issuer(tmp_path / "issuer")
    tls = (f'\n[server.tls]\ncert_file = "{server[0]}"\nkey_file = "{server[1]}"\nclient_ca_file = "{ca}"\n'
           f'allowed_callers = ["{envoy_id}"]\n')
    path = write_config(tmp_path, issuer.settings, extra=tls)
    text = path.read_text().replace('grace_seconds = 2', 'grace_seconds = 2\nmax_concurrent_rpcs = 4')
    path.write_text(text)

    def channel(pair):
        creds = grpc.ssl_channel_credentials(ca.read_bytes(), private_key=pair[1].read_bytes(),
                                             certificate_chain=pair[0].read_bytes())
        return grpc.secure_channel(address, creds, options=[("grpc.use_local_subchannel_pool", 1)])

    with running_server(config.load(path, env={})) as (address, _app):
        hog = channel(intruder)
        watches = [health_pb2_grpc.HealthStub(hog).Watch(health_pb2.HealthCheckRequest(), timeout=30)
                   for _ in range(4)]
        refused = 0
        for stream in watches:
            try:
                next(stream)  # were it admitted, each Watch would be an open RPC occupying a slot
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                refused += 1
        assert refused == len(watches)  # a caller outside allowed_callers gets no long-lived stream
        try:
            with channel(envoy) as ch:
                request = pb.CheckRequest(token=issuer.mint(tenant="acme", roles=["viewer"]), action="read",
                                          resource=pb.Resource(type="Invoice", id="i", tenant="acme"))
                try:
                    answer = pb_grpc.AuthorizerStub(ch).Check(request, timeout=5)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as err:
                    code, answer = err.code(), None
        finally:
            for stream in watches:
                stream.cancel()
            hog.close()
    assert code is grpc.StatusCode.OK and answer.decision == pb.ALLOW, (
        f"the allowed caller's Check got {code.name}: a caller outside allowed_callers starved it via Health.Watch")


# ------------------------------------------------------------------------------------------------------------
# F4  Admin.Status needs no token and is not restricted (without allowed_callers): any workload that can reach
#     the gRPC port reads last_reload_message, i.e. every PolicyDiagnostic of every tenant: other customers'
#     tenant names, entity uids (here an e-mail address), policy ids and texts (rpc/admin.py:22-30).


def test_f4_admin_status_does_not_disclose_other_tenants_policy_diagnostics_to_anonymous_callers(tmp_path):
    root = _copy_bundled(tmp_path / "policies")
    issuer = _issuer(tmp_path / "issuer")
    path = write_config(tmp_path, issuer.settings, policies=root)
    with running_server(config.load(path, env={})) as (address, app):
        secret = root / "tenants" / "globex-merger-target"
        secret.mkdir(parents=True)
        (secret / "entities.json").write_text(json.dumps(
            [{"uid": {"type": "User", "id": "ceo@globex.example"}, "attrs": {"roles": ["admin"], "salary": 1}}]))
        assert app.policies.reload().ok is False
        with grpc.insecure_channel(address) as ch:  # no token, no certificate
            try:
                status = admin_pb2_grpc.AdminStub(ch).Status(admin_pb2.StatusRequest(), timeout=5)
                leaked = status.last_reload_message
            except grpc.RpcError:
                leaked = ""
    assert "globex-merger-target" not in leaked and "ceo@globex.example" not in leaked, leaked


def test_admin_status_does_not_name_another_tenants_file_in_the_first_line_of_a_refusal(tmp_path):
    # Review finding (a later round): only the first line was kept, but loader refusals name the file there
    # ("not a regular file: tenants/globex-secret-merger/project-falcon.cedar").
    root = _copy_bundled(tmp_path / "policies")
    issuer = _issuer(tmp_path / "issuer")
    path = write_config(tmp_path, issuer.settings, policies=root)
    with running_server(config.load(path, env={})) as (address, app):
        secret = root / "tenants" / "globex-secret-merger"
        secret.mkdir(parents=True)
        (secret / "project-falcon.cedar").symlink_to(tmp_path / "nowhere.cedar")  # dangling
        assert app.policies.reload(force=True).ok is False  # forced: the poll may have seen it first
        assert "project-falcon" in app.policies.last_result.message  # the log and validate still say which
        with grpc.insecure_channel(address) as ch:  # no token, no certificate
            status = admin_pb2_grpc.AdminStub(ch).Status(admin_pb2.StatusRequest(), timeout=5)
    assert not status.last_reload_ok
    assert "globex" not in status.last_reload_message and "falcon" not in status.last_reload_message


# ------------------------------------------------------------------------------------------------------------
# F5  Grant reason/ticket (and revoke reason) accept control characters: ESC/CR/BS go into the store, the audit
#     log and `tenantgate grant list`'s table verbatim, so a requester can repaint what the approver sees
#     (core/breakglass.py:188-195; cli/grants.py:109-115).


def _breakglass(tmp_path):
    store = SqliteGrantStore(tmp_path / "grants.db")
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    return BreakGlass(store=store, audit=sink, clock=FixedClock(NOW), rules=GrantRules(),
                      verifier=verifier_for(_issuer(tmp_path / "i"), clock=FixedClock(NOW)))


def _person(sub, *roles, tenant="platform", issuer="https://issuer.test"):
    return Principal("User", sub, sub, tenant, tuple(roles), None, issuer, "jti")


def test_f5_grant_ticket_with_terminal_escapes_is_refused(tmp_path):
    bg = _breakglass(tmp_path)
    spoof = "INC-1\r\x1b[2K\x1b[1A\x1b[2K0000-fake  PENDING  oscar@platform  acme  read"
    with pytest.raises(GrantInvalid):
        bg.request(_person("oscar", "breakglass-operator"),
                   GrantRequest("acme", ("read", "update", "delete"), "incident", spoof, 900))


def test_f5_grant_list_table_never_prints_raw_control_characters(tmp_path, monkeypatch):
    from tenantgate.cli import grants as cli_grants
    from tenantgate.core.grants import Grant, GrantState
    from tenantgate.rpc.convert import grant_message

    g = Grant("g1", "oscar", "platform", "acme", ("delete",), "r", "T\x1b[2K\rharmless", 900,
              GrantState.PENDING, NOW, NOW + 60)
    args = type("A", (), {"json": False, "handler": cli_grants._list})()
    out = io.StringIO()
    with redirect_stdout(out):
        cli_grants._show(args, [grant_message(g, NOW)])
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue(), repr(out.getvalue())


# ------------------------------------------------------------------------------------------------------------
# F8  The "global policy naming an entity must pin a tenant" rule accepts any mention of a tenant attribute,
#     e.g. `principal has tenant`, which pins nothing (core/compiler.py:370-376, 433-435).


def test_f8_global_policy_naming_an_entity_without_a_real_tenant_pin_is_refused(tmp_path):
    root = _copy_bundled(tmp_path / "policies")
    (root / "zz-alice.cedar").write_text(
        '@id("alice-everywhere")\npermit (principal == User::"alice", action, resource) '
        'when { principal has tenant };\n')
    with pytest.raises(PolicyError):
        load_policies(root)


# ------------------------------------------------------------------------------------------------------------
# F9  A grant is bound to (sub, operator tenant) but not to the issuer: with two trusted issuers that may both
#     speak for the operator tenant, a same-`sub` token of the other issuer uses (or approves around) the grant
#     (core/grants.py:280-284; core/breakglass.py:90-95,159-165).


def test_f9_grant_is_bound_to_the_issuer_of_the_requesting_token(tmp_path):
    bg = _breakglass(tmp_path)
    bg.rules = GrantRules(require_approval=False)
    bg.request(_person("oscar", "breakglass-operator", issuer="https://corp-idp"),
               GrantRequest("acme", ("read",), "incident", "INC-1", 900))
    other_idp_oscar = _person("oscar", "breakglass-operator", issuer="https://partner-idp")
    assert bg.find(other_idp_oscar, "acme", "read") is None


def test_a_configmap_swap_that_deletes_the_directory_being_read_is_not_a_refused_reload(tmp_path, monkeypatch):
    # Review finding (second round): kubelet swaps ..data and then deletes the old ..<timestamp> directory;
    # a reload reading from the old one got "no *.cedar policy files" and reported the set as refused
    # (last_reload_ok 0, the alert fires) although nothing was wrong with it.
    root, store = _configmap(tmp_path)
    version = store.current().version
    real_read = policy_loader._read

    def read_then_swap_and_delete(path, base):
        if path.name == "schema.cedarschema" and (root / "..v1").exists():
            os.symlink("..v2", root / "..data_tmp")
            os.replace(root / "..data_tmp", root / "..data")
            shutil.rmtree(root / "..v1")
        return real_read(path, base)

    monkeypatch.setattr(policy_loader, "_read", read_then_swap_and_delete)
    result = store.reload(force=True)
    monkeypatch.setattr(policy_loader, "_read", real_read)
    assert (result.ok, result.changed, store.current().version) == (True, False, version)
    assert "changed while being read" in result.message
    assert store.reload().ok and store.current().version != version  # the next poll takes the new set
