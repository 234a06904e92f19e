"""Records cut off the end of a running server's log are recorded as lost by its next decision.

Review finding: a log of 607 records, signed every 10, cut in place to 100 lines (head file untouched) was
reported `truncated` by verify until the server's next decision; after it, `verify --public-key
--max-unsigned 10` said OK and 461 answered ALLOWs were in no file, without a trace.
"""

from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.audit import verify_log
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


def _req(token, rid):
    return pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id=rid, tenant="acme"))


def test_records_cut_off_a_running_servers_log_are_reported_lost_after_its_next_decision(tmp_path):
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "audit-signing.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    issuer = TestIssuer(tmp_path)
    extra = f'\n[audit]\ncheckpoint_key_file = "{pem}"\ncheckpoint_every = 10\n'
    settings = config.load(write_config(tmp_path, issuer.settings, extra=extra), env={})
    token = issuer.mint(tenant="acme", sub="vera", roles=["viewer"])
    log = Path(settings.audit.path)
    with running_server(settings) as (address, _app), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        for i in range(60):
            assert stub.Check(_req(token, f"inv-{i}"), timeout=5).decision == pb.ALLOW
        assert verify_log(log, public_key=key.public_key(), max_unsigned=10).intact
        lines = log.read_bytes().splitlines(keepends=True)
        with open(log, "r+b") as f:  # same inode, a line boundary, the head file left alone
            f.write(b"".join(lines[:20]))
            f.truncate()
        assert stub.Check(_req(token, "one-more"), timeout=5).decision == pb.ALLOW
        report = verify_log(log, public_key=key.public_key(), max_unsigned=10)
        assert not report.intact and "lost" in {f.kind for f in report.findings}, report.findings
    report = verify_log(log, public_key=key.public_key(), max_unsigned=10)
    (lost,) = [f for f in report.findings if f.kind == "lost"]
    assert f"records seq 21..{len(lines)}" in lost.message
