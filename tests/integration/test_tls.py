"""TLS and mTLS on the gRPC port with throwaway CAs: plaintext and strangers refused, the caller allow-list,
certificate rotation without a restart, the plaintext health port, and the CLI's TLS options."""

import base64
import hashlib
import json
import logging
import socket
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest

from support.certs import TestCA
from support.envoy import EXT_AUTHZ_ROUTES, envoy_request, http_status
from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.cli.main import main as cli
from tenantgate.errors import ConfigError
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

ENVOY_ID = "spiffe://mesh.test/ns/edge/sa/envoy"
HEALTH = health_pb2.HealthCheckRequest()
SERVING = health_pb2.HealthCheckResponse.SERVING


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEALTH_PORT = _free_port()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A mesh CA with a server certificate for 127.0.0.1, an allowed and an unlisted client, and a foreign CA."""
    tmp = tmp_path_factory.mktemp("pki")
    mesh, foreign = TestCA("mesh"), TestCA("foreign")
    files = {
        "ca": mesh.write(tmp, "mesh-ca.crt"),
        "foreign_ca": foreign.write(tmp, "foreign-ca.crt"),
        "server": mesh.issue("tenantgate", dns=["localhost", "tenantgate.test"], ips=["127.0.0.1"]).write(tmp, "srv"),
        "envoy": mesh.issue("envoy", uris=[ENVOY_ID]).write(tmp, "envoy"),
        "intruder": mesh.issue("intruder", uris=["spiffe://mesh.test/ns/other/sa/app"]).write(tmp, "intruder"),
        "gateway": mesh.issue("gateway", dns=["gateway.mesh.test"]).write(tmp, "gateway"),
        "stranger": foreign.issue("stranger", uris=[ENVOY_ID]).write(tmp, "stranger"),
        # The allowed Envoy's URI SAN next to an x400Address, a name type cryptography cannot represent.
        "odd_san": mesh.issue("odd", raw_san=san_with_x400_address(ENVOY_ID)).write(tmp, "odd"),
    }
    return tmp, files


def san_with_x400_address(uri: str) -> bytes:
    """DER of a SubjectAlternativeName holding an (empty) x400Address and ``uri``."""
    names = b"\xa3\x00" + b"\x86" + bytes([len(uri)]) + uri.encode("ascii")
    return b"\x30" + bytes([len(names)]) + names


def _tls_toml(cert, key, ca=None, allowed=()):
    text = f'\n[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    if ca:
        text += f'client_ca_file = "{ca}"\n'
    if allowed:
        text += f"allowed_callers = {list(allowed)!r}\n".replace("'", '"')
    return text


def _start(tmp_path_factory, issuer, tls_text, env=None):
    tmp = tmp_path_factory.mktemp("server")
    path = write_config(tmp, issuer.settings, extra=EXT_AUTHZ_ROUTES + tls_text)
    return running_server(config.load(path, env=env or {}))


def _channel(address, ca=None, pair=None):
    options = [("grpc.use_local_subchannel_pool", 1)]  # never reuse a connection made with other credentials
    if ca is None:
        return grpc.insecure_channel(address, options=options)
    key = pair[1].read_bytes() if pair else None
    chain = pair[0].read_bytes() if pair else None
    credentials = grpc.ssl_channel_credentials(ca.read_bytes(), private_key=key, certificate_chain=chain)
    return grpc.secure_channel(address, credentials, options=options)


def _health(address, **kw):
    with _channel(address, **kw) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(HEALTH, timeout=5).status


def _check(address, token, **kw):
    with _channel(address, **kw) as ch:
        resource = pb.Resource(type="Invoice", id="i", tenant="acme")
        request = pb.CheckRequest(token=token, action="read", resource=resource)
        return pb_grpc.AuthorizerStub(ch).Check(request, timeout=5)


def _refused(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


# ------------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, issuer, pki):
    _tmp, f = pki
    with _start(tmp_path_factory, issuer, _tls_toml(*f["server"])) as running:
        yield running


def test_tls_port_answers_clients_that_trust_its_ca(tls_server, pki):
    assert _health(tls_server[0], ca=pki[1]["ca"]) == SERVING


def test_plaintext_is_refused_when_tls_is_on(tls_server):
    assert _refused(lambda: _health(tls_server[0])) == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_servers_ca_cannot_connect(tls_server, pki):
    assert _refused(lambda: _health(tls_server[0], ca=pki[1]["foreign_ca"])) == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------------------------------------ mTLS


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, issuer, pki):
    _tmp, f = pki
    text = _tls_toml(*f["server"], ca=f["ca"], allowed=[ENVOY_ID, "gateway.mesh.test"])
    text += f'\n[ext_authz]\ncertificate_forwarders = ["{ENVOY_ID}"]\n'
    env = {"TENANTGATE_SERVER_HEALTH_LISTEN": f"127.0.0.1:{HEALTH_PORT}"}
    with _start(tmp_path_factory, issuer, text, env=env) as running:
        yield running


def test_mtls_admits_an_allowed_caller(mtls_server, pki, issuer):
    f = pki[1]
    response = _check(mtls_server[0], issuer.mint(tenant="acme", roles=["viewer"]), ca=f["ca"], pair=f["envoy"])
    assert response.reason == "allow"


def test_mtls_refuses_a_client_without_a_certificate(mtls_server, pki):
    assert _refused(lambda: _health(mtls_server[0], ca=pki[1]["ca"])) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_from_another_ca(mtls_server, pki):
    f = pki[1]
    code = _refused(lambda: _check(mtls_server[0], "t", ca=f["ca"], pair=f["stranger"]))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_caller_outside_allowed_callers_is_refused_logged_and_counted(mtls_server, pki, caplog):
    address, app = mtls_server
    f = pki[1]
    before = app.metrics.callers_refused._value.get()
    with caplog.at_level(logging.WARNING, logger="tenantgate.tls"):
        assert _refused(lambda: _check(address, "t", ca=f["ca"], pair=f["intruder"])) == \
            grpc.StatusCode.PERMISSION_DENIED
        with _channel(address, ca=f["ca"], pair=f["intruder"]) as ch:
            envoy = ext_grpc.AuthorizationStub(ch)
            assert _refused(lambda: envoy.Check(envoy_request(), timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    assert app.metrics.callers_refused._value.get() == before + 2
    text = generate_latest(app.registry).decode()
    assert "tenantgate_callers_refused_total" in text
    # Refused before any servicer ran, still counted among the handled calls, by method and code.
    for method in ("/tenantgate.v1.Authorizer/Check", "/envoy.service.auth.v3.Authorization/Check"):
        assert f'tenantgate_grpc_server_handled_total{{code="PERMISSION_DENIED",method="{method}"}} 1.0' in text
    (line, *_rest) = [r.getMessage() for r in caplog.records if "caller refused" in r.getMessage()]
    assert "spiffe://mesh.test/ns/other/sa/app" in line and "/tenantgate.v1.Authorizer/Check" in line


def test_a_certificate_with_a_san_cryptography_cannot_read_is_refused_like_any_unlisted_caller(mtls_server, pki,
                                                                                            issuer, caplog):
    # Review finding: an x400Address (or ediPartyName) in the client certificate's SAN made reading its identities
    # raise UnsupportedGeneralNameType: the allow-list answered UNKNOWN with a traceback instead of a logged,
    # counted PERMISSION_DENIED, and ext_authz (without an allow-list) an internal_error no audit record holds.
    address, _app = mtls_server
    f = pki[1]
    with caplog.at_level(logging.WARNING, logger="tenantgate.tls"):
        code = _refused(lambda: _check(address, issuer.mint(tenant="acme", roles=["viewer"]), ca=f["ca"],
                                       pair=f["odd_san"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert any("caller refused" in r.getMessage() for r in caplog.records)


def test_health_checks_are_exempt_from_the_caller_list_but_not_from_mtls(mtls_server, pki):
    f = pki[1]
    assert _health(mtls_server[0], ca=f["ca"], pair=f["intruder"]) == SERVING


def test_envoy_identity_reaches_ext_authz_over_mtls(mtls_server, pki, issuer):
    f = pki[1]
    with _channel(mtls_server[0], ca=f["ca"], pair=f["envoy"]) as ch:
        response = ext_grpc.AuthorizationStub(ch).Check(
            envoy_request(token=issuer.mint(tenant="acme", roles=["viewer"])), timeout=5)
    assert http_status(response) == 200


def test_only_certificate_forwarders_can_unlock_a_bound_token_with_a_forwarded_certificate(mtls_server, pki,
                                                                                          issuer):
    # Review finding: any caller (here another allowed caller, an application calling Authorizer) could paste a
    # victim's certificate into attributes.source.certificate and use the victim's stolen bound token.
    f = pki[1]
    client = TestCA().issue("client", uris=["spiffe://mesh.test/app"])
    bound = issuer.mint(tenant="acme", roles=["viewer"], cnf={"x5t#S256": client.x5t_s256})
    answers = {}
    for caller in ("envoy", "gateway"):
        with _channel(mtls_server[0], ca=f["ca"], pair=f[caller]) as ch:
            answers[caller] = ext_grpc.AuthorizationStub(ch).Check(
                envoy_request(token=bound, certificate=client.envoy_encoded), timeout=5)
    assert http_status(answers["envoy"]) == 200
    assert http_status(answers["gateway"]) == 401
    assert json.loads(answers["gateway"].denied_response.body)["reason"] == "token_binding_mismatch"


def test_the_plaintext_health_port_serves_only_health(mtls_server):
    health_address = f"127.0.0.1:{HEALTH_PORT}"
    assert _health(health_address) == SERVING
    assert _refused(lambda: _check(health_address, "t")) == grpc.StatusCode.UNIMPLEMENTED


# -------------------------------------------------------------------------------------------- rotation


def test_rotated_certificates_are_picked_up_without_a_restart(tmp_path_factory, issuer, tmp_path):
    old_ca, new_ca = TestCA("old"), TestCA("new")
    old_ca_file, new_ca_file = old_ca.write(tmp_path, "old-ca.crt"), new_ca.write(tmp_path, "new-ca.crt")
    cert, key = old_ca.issue("tenantgate", ips=["127.0.0.1"]).write(tmp_path, "server")
    with _start(tmp_path_factory, issuer, _tls_toml(cert, key)) as (address, _app):
        assert _health(address, ca=old_ca_file) == SERVING
        assert _refused(lambda: _health(address, ca=new_ca_file)) == grpc.StatusCode.UNAVAILABLE
        rotated = new_ca.issue("tenantgate", ips=["127.0.0.1"])
        # A half-done rotation (new certificate, old key) is never used: the old pair keeps serving.
        cert.write_bytes(rotated.cert_pem)
        assert _health(address, ca=old_ca_file) == SERVING
        key.write_bytes(rotated.key_pem)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _health(address, ca=new_ca_file) == SERVING
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert _refused(lambda: _health(address, ca=old_ca_file)) == grpc.StatusCode.UNAVAILABLE


def test_unusable_certificate_files_stop_the_server_from_starting(tmp_path_factory, issuer, tmp_path):
    ca = TestCA()
    cert, _key = ca.issue("a").write(tmp_path, "a")
    _cert, other_key = ca.issue("b").write(tmp_path, "b")
    for text, message in ((_tls_toml(cert, other_key), "does not belong"),
                          (_tls_toml(cert, tmp_path / "missing.key"), "cannot read"),
                          (_tls_toml(other_key, other_key), "not a PEM certificate")):
        with pytest.raises(RuntimeError, match=message), _start(tmp_path_factory, issuer, text):
            pass


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_talks_tls_and_mtls_with_its_tls_options(mtls_server, pki, issuer, capsys):
    address, _app = mtls_server
    f = pki[1]
    tls = ["--tls-ca", str(f["ca"]), "--tls-cert", str(f["envoy"][0]), "--tls-key", str(f["envoy"][1])]
    token = issuer.mint(tenant="acme", roles=["viewer"])
    assert cli(["check", "--server", address, "--token", token, "--action", "read", "--resource-type", "Invoice",
                "--resource-id", "inv-1", "--resource-tenant", "acme", *tls]) == 0
    assert '"decision": "ALLOW"' in capsys.readouterr().out
    assert cli(["health", "--server", address, *tls]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert cli(["status", "--server", address, *tls]) == 0
    capsys.readouterr()
    assert cli(["health", "--server", address, "--timeout", "2"]) == 1  # plaintext against mTLS: not healthy
    assert "A port with TLS needs --tls-ca" in capsys.readouterr().err  # gRPC alone says "Socket closed"
    assert cli(["health", "--server", address, "--tls-ca", str(f["ca"]), "--timeout", "2"]) == 1  # no cert
    assert "mTLS also --tls-cert and --tls-key" in capsys.readouterr().err
    assert cli(["health", "--server", address, "--tls-ca", str(f["ca"]), "--tls-cert", str(f["envoy"][0])]) == 1


def test_configuration_error_names_the_tls_file(tmp_path):
    from tenantgate.rpc.tls import TlsFiles, load_material

    with pytest.raises(ConfigError, match=r"server\.tls\.cert_file"):
        load_material(TlsFiles(str(tmp_path / "nope.crt"), str(tmp_path / "nope.key")))



def test_a_certificate_file_swapped_for_a_fifo_is_refused_not_waited_on_by_the_handshake_path(tmp_path, pki):
    # Hostile review: the reloader grpc calls before every handshake opened the files with a blocking open():
    # a FIFO at cert_file hung that call, holding the reloader's lock, so every later TLS handshake hung too.
    import os
    import shutil
    import threading

    from tenantgate.rpc.tls import CertificateReloader, TlsFiles

    cert, key = (tmp_path / "srv.crt", tmp_path / "srv.key")
    shutil.copy(pki[1]["server"][0], cert)
    shutil.copy(pki[1]["server"][1], key)
    reloader = CertificateReloader(TlsFiles(str(cert), str(key)))
    cert.unlink()
    os.mkfifo(cert)
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.append(reloader()), daemon=True)
    thread.start()
    thread.join(5)
    assert answers == [None], "the handshake path waited on the FIFO"  # the previous certificates stay


def test_a_refused_stream_is_not_counted_as_a_handled_call(mtls_server, pki):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    address, app = mtls_server
    f = pki[1]
    with _channel(address, ca=f["ca"], pair=f["intruder"]) as ch:
        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        assert _refused(lambda: list(stream)) == grpc.StatusCode.PERMISSION_DENIED
    # Streams are not measured when allowed, so a refused one makes no series either (review finding).
    assert "ServerReflectionInfo" not in generate_latest(app.registry).decode()


def test_a_certificate_bound_token_works_for_grant_calls_only_with_its_certificate(mtls_server, pki, issuer):
    f = pki[1]
    der = x509.load_pem_x509_certificate(f["envoy"][0].read_bytes()).public_bytes(serialization.Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    bound = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"], cnf={"x5t#S256": thumbprint})
    other = issuer.mint(tenant="platform", sub="ada", roles=["breakglass-approver"],
                        cnf={"x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).rstrip(b"=").decode()})

    def listing(token):
        with _channel(mtls_server[0], ca=f["ca"], pair=f["envoy"]) as ch:
            return bg_grpc.BreakGlassStub(ch).ListGrants(bg.ListGrantsRequest(), timeout=5,
                                                         metadata=[("authorization", f"Bearer {token}")])

    assert list(listing(bound).grants) == []
    assert _refused(lambda: listing(other)) == grpc.StatusCode.UNAUTHENTICATED
