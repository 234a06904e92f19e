"""What an unauthenticated client can make a real server log is bounded per cause (review finding: one client
wrote up to ~10,000 lines a second): failed TLS handshakes write nothing (and nothing that is not JSON),
refused break-glass calls write nothing at info, and an audit outage is one line, not one per call, while the
metrics still count every event."""

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from support.certs import TestCA
from support.issuers import TestIssuer
from support.server import running_server, stop_process, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

HANDSHAKES = 40  # of each kind


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    mesh, foreign = TestCA("mesh"), TestCA("foreign")
    return {"dir": tmp, "ca": mesh.write(tmp, "mesh-ca.crt"),
            "server": mesh.issue("tenantgate", ips=["127.0.0.1"]).write(tmp, "srv"),
            "stranger": foreign.issue("stranger").write(tmp, "stranger")}


def _serve_tls(tmp_path, issuer, pki, workers, env_extra):
    cert, key = pki["server"]
    cfg = write_config(tmp_path, issuer.settings, extra=f'\n[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
                                                        f'client_ca_file = "{pki["ca"]}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTGATE_", "PROMETHEUS_", "GRPC_"))}
    env.update(env_extra)
    stderr = (tmp_path / "stderr.log").open("w")
    command = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(cfg)]
    if workers > 1:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    threading.Timer(60, proc.kill).start()  # a server that never prints its banner cannot hang the suite
    banner = proc.stdout.readline()
    assert "serving gRPC on" in banner, (tmp_path / "stderr.log").read_text()
    return proc, banner.split("serving gRPC on ")[1].split()[0]


def _failed_handshakes(address: str, pki) -> None:
    host, _, port = address.rpartition(":")
    target = (host, int(port))
    no_cert = ssl.create_default_context(cafile=str(pki["ca"]))
    no_cert.set_alpn_protocols(["h2"])
    wrong_ca = ssl.create_default_context(cafile=str(pki["ca"]))
    wrong_ca.load_cert_chain(*map(str, pki["stranger"]))
    wrong_ca.set_alpn_protocols(["h2"])
    for _ in range(HANDSHAKES):
        with socket.create_connection(target, timeout=5) as garbage:  # a ClientHello that is not one
            garbage.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(32))
            _drain(garbage)
        for context in (no_cert, wrong_ca):
            with socket.create_connection(target, timeout=5) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                        _drain(tls)
                except OSError:
                    pass  # refused: what the server logs about it is the point
    for _ in range(HANDSHAKES // 4):  # plaintext gRPC to the TLS port
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
            pb_grpc.AuthorizerStub(channel).Check(pb.CheckRequest(), timeout=2)


def _drain(connection) -> None:
    try:
        connection.recv(100)
    except OSError:
        pass


def _not_json(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_tls_handshakes_write_no_line_and_the_log_stays_json(tmp_path, issuer, pki, workers):
    proc, address = _serve_tls(tmp_path, issuer, pki, workers, {})
    try:
        _failed_handshakes(address, pki)
    finally:
        stop_process(proc)
    text = (tmp_path / "stderr.log").read_text()
    assert _not_json(text) == [] and "Handshake failed" not in text


def test_an_operators_own_grpc_verbosity_is_respected(tmp_path, issuer, pki):
    proc, address = _serve_tls(tmp_path, issuer, pki, 1, {"GRPC_VERBOSITY": "INFO"})
    try:
        _failed_handshakes(address, pki)
    finally:
        stop_process(proc)
    handshakes = [line for line in _not_json((tmp_path / "stderr.log").read_text()) if "Handshake failed" in line]
    assert len(handshakes) >= HANDSHAKES  # what every failed handshake wrote before


# ----------------------------------------------------------------------------------- in-process server


@pytest.fixture()
def server(tmp_path, issuer, caplog):
    caplog.set_level(logging.INFO)
    settings = config.load(write_config(tmp_path, issuer.settings), env={})
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        yield app, channel, caplog


def _handled(app, method: str, code: str) -> float:
    return app.registry.get_sample_value("tenantgate_grpc_server_handled_total",
                                         {"method": method, "code": code}) or 0.0


def _lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_refused_break_glass_calls_write_no_line_at_info_and_are_still_counted(server):
    app, channel, caplog = server
    stub = bg_grpc.BreakGlassStub(channel)
    for metadata in ((), (("authorization", "Bearer x.y.z"),)):
        for _ in range(100):
            for call, request in ((stub.ListGrants, bg.ListGrantsRequest()),
                                  (stub.RequestGrant, bg.RequestGrantRequest())):
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, metadata=metadata, timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _lines(caplog, "tenantgate.rpc.breakglass") == []
    # Counted when the call ends on the server, which may be just after the client has its answer (seen: 199).
    for method in ("ListGrants", "RequestGrant"):
        eventually(lambda m=method: _handled(app, f"/tenantgate.v1.BreakGlass/{m}", "UNAUTHENTICATED") == 200,
                   f"200 refused {method} calls counted")


def test_an_audit_outage_is_one_line_per_cause_not_one_per_call_and_every_failure_is_counted(server):
    app, channel, caplog = server
    authorizer, breakglass = pb_grpc.AuthorizerStub(channel), bg_grpc.BreakGlassStub(channel)
    audit = Path(app.settings.audit.path)
    authorizer.Check(pb.CheckRequest(token="x.y.z"), timeout=5)  # the log exists
    moved = audit.with_name("audit.jsonl.away")
    audit.rename(moved)
    os.mkfifo(audit)  # every append is refused, as on a full disk
    try:
        for _ in range(200):
            assert authorizer.Check(pb.CheckRequest(token="x.y.z"), timeout=5).reason == "audit_unavailable"
        for _ in range(100):
            with pytest.raises(grpc.RpcError):
                breakglass.RequestGrant(bg.RequestGrantRequest(), timeout=5)
    finally:
        audit.unlink()
        moved.rename(audit)
    assert len(_lines(caplog, "tenantgate.decision")) == 1
    assert len(_lines(caplog, "tenantgate.grants")) == 1
    assert _lines(caplog, "tenantgate.rpc.breakglass") == []
    assert app.registry.get_sample_value("tenantgate_audit_failures_total") >= 200

