"""What the CLI prints: JSON numbers as numbers, times as audit records write them, and no message left
empty or with an empty part."""

import argparse
import json
from concurrent import futures

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tenantgate.audit import JsonlAuditSink
from tenantgate.audit.files import chain_files
from tenantgate.cli import grants, main
from tenantgate.cli.channel import message_dict, rpc_problem
from tenantgate.core.model import AuditEvent
from tenantgate.v1 import admin_pb2 as adm
from tenantgate.v1 import breakglass_pb2 as bg

EXPIRES_NS = 1_796_304_035_688_510_976  # 2026-12-03T13:20:35.688510976Z


def _stamp(nanoseconds):
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(nanoseconds)
    return stamp


def _grant():
    return bg.Grant(id="g-1", state=bg.GrantState.Value("ACTIVE"), operator="oscar", operator_tenant="platform",
                    target_tenant="acme", actions=["read"], ticket="INC-1", duration_seconds=60,
                    expires_at=_stamp(EXPIRES_NS))


def test_status_counts_are_json_numbers():
    answer = adm.StatusResponse(version="0.1.0", policy_count=12, tenant_partitions=1, last_reload_ok=True)
    shown = message_dict(answer)
    assert shown["policy_count"] == 12 and shown["tenant_partitions"] == 1
    assert shown["audit_writable"] is False  # fields at their default are still shown


@pytest.mark.parametrize("handler", [grants._request, grants._list])
def test_grant_json_has_a_numeric_duration_and_millisecond_times(handler, capsys):
    assert grants._show(argparse.Namespace(json=True, handler=handler), [_grant()]) == 0
    shown = json.loads(capsys.readouterr().out)
    grant = shown[0] if handler is grants._list else shown
    assert grant["duration_seconds"] == 60
    assert grant["expires_at"] == "2026-12-03T13:20:35.688Z"  # as audit records write times


def test_grant_list_table_shows_expiry_in_milliseconds(capsys):
    assert grants._show(argparse.Namespace(json=False, handler=grants._list), [_grant()]) == 0
    _header, row = capsys.readouterr().out.splitlines()
    assert "2026-12-03T13:20:35.688Z" in row and "688510976" not in row


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_health_of_an_unknown_service_says_so(health_server, capsys):
    assert main.main(["health", "--server", health_server]) == 0
    assert main.main(["health", "--server", health_server, "--service", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == f"tenantgate: health {health_server}: no such service: nope\n"


def test_a_failed_call_without_details_is_named_by_its_code_alone(health_server):
    with grpc.insecure_channel(health_server) as channel, pytest.raises(grpc.RpcError) as failed:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert rpc_problem(failed.value) == "NOT_FOUND"  # was "NOT_FOUND: "


def test_no_connection_says_what_to_check(capsys):
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    assert main.main(["health", "--server", address, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "is the server running at that address?" in err and "--tls-ca" in err, err


def test_verify_of_a_log_whose_files_were_deleted_has_no_empty_file_list(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write(AuditEvent(decision_id="id-1", time="2026-01-01T00:00:00.000Z", decision="DENY",
                          reason="cross_tenant", message="m", api="check", subject="alice", actor="",
                          principal_type="User", principal_tenant="acme", resource_type="Invoice",
                          resource_id="inv-1", resource_tenant="globex", action="read", intent="", policy_ids=(),
                          grant_id="", policy_version="v", issuer="iss", token_id="jti"))
    sink.close()
    for file in chain_files(path):
        file.unlink()
    assert main.main(["audit", "verify", str(path)]) == 4
    *findings, summary = capsys.readouterr().out.splitlines()
    assert summary == "TAMPERED: 1 problem(s) in 0 records"
    assert any("audit.jsonl.head" in line and "no file of this log is left" in line for line in findings)


@pytest.mark.parametrize(("reload_ok", "audit_ok", "store_ok", "code"), [
    (True, True, True, 0), (False, True, True, 1), (True, False, True, 1), (True, True, False, 1)])
def test_status_exits_1_when_any_part_is_unhealthy_the_grant_store_included(reload_ok, audit_ok, store_ok, code,
                                                                            capsys):
    # Review finding: with the grant store down, status printed "grant_store_reachable": false and exited 0.
    from tenantgate.v1 import admin_pb2_grpc as adm_grpc

    class Admin(adm_grpc.AdminServicer):
        def Status(self, request, context):
            return adm.StatusResponse(version="0.1.0", last_reload_ok=reload_ok, audit_writable=audit_ok,
                                      grant_store_reachable=store_ok)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    adm_grpc.add_AdminServicer_to_server(Admin(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert main.main(["status", "--server", f"127.0.0.1:{port}"]) == code
    finally:
        server.stop(None)
    assert json.loads(capsys.readouterr().out)["grant_store_reachable"] is store_ok


def test_check_with_a_number_a_struct_cannot_carry_is_a_usage_error_not_a_traceback(capsys):
    # Review finding: `check --server` with an integer beyond a double raised OverflowError (a traceback); deciding
    # in-process gives an audited invalid_request. Nothing is sent: no server is needed.
    huge = "1" + "0" * 400
    code = main.main(["check", "--server", "127.0.0.1:9", "--token", "t", "--action", "read", "--resource-type",
                      "Invoice", "--resource-id", "inv-1", "--resource-tenant", "acme",
                      "--context", f'{{"n": {huge}}}'])
    err = capsys.readouterr().err
    assert code == 1 and "--context cannot be sent to a server" in err and "Traceback" not in err


def test_check_with_a_token_that_is_not_utf8_is_a_usage_error_not_a_traceback(capsys):
    # Review finding: `check --server --token "$T"$'\xff'` ended in a UnicodeEncodeError traceback. The argument's
    # undecodable byte arrives as a lone surrogate (Python's surrogateescape).
    code = main.main(["check", "--server", "127.0.0.1:9", "--token", "eyJ.e30.sig\udcff", "--action", "read",
                      "--resource-type", "Invoice", "--resource-id", "inv-1", "--resource-tenant", "acme"])
    err = capsys.readouterr().err
    assert code == 1 and "the token is not UTF-8 text" in err and "Traceback" not in err and "sig" not in err


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "tail"], ["audit", "query"],
                                     ["validate", "--policies"]])
def test_a_file_name_longer_than_the_file_system_allows_is_one_line_not_a_traceback(tmp_path, capsys, command):
    # Review finding: `audit verify` on a 300-character name ended in ENAMETOOLONG's traceback (Path.is_dir).
    name = str(tmp_path / ("a" * 300))
    assert main.main([*command, name]) in (1, 3, 4)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1 and err.startswith("tenantgate: "), err
