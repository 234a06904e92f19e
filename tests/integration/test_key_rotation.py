"""Revoking a signing key against a running server: a token verified (and cached) before its key left the
issuer's JWKS is denied at the first decision after the new key set is held: a JWKS file re-read on SIGHUP
or by the policy poll, a JWKS URL re-fetched (review findings: the file was read only at start; cached
tokens outlived their key)."""

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.issuers import LoopbackServer, TestIssuer
from support.policies import single_policy_dir, with_poll
from support.server import running_server, write_config
from support.waiting import eventually
from tenantgate import config
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

AUTHORIZER = "tenantgate.v1.Authorizer"


def _check(stub, token):
    return stub.Check(pb.CheckRequest(token=token, action="read",
                                      resource=pb.Resource(type="Invoice", id="i", tenant="acme")), timeout=10)


def _replace(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def _issuers(tmp_path):
    """The compromised key and its replacement, one issuer; the JWKS file publishes the compromised one."""
    compromised = TestIssuer(tmp_path)
    replacement = TestIssuer(tmp_path)
    return compromised, replacement


def test_sighup_rereads_the_jwks_file_and_a_removed_keys_cached_token_is_denied(tmp_path):
    compromised, replacement = _issuers(tmp_path)
    policy_dir = single_policy_dir(tmp_path)
    cfg = with_poll(write_config(tmp_path, compromised.settings, policies=policy_dir), policy_dir, 0)
    proc = subprocess.Popen([sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        address = banner.split("serving gRPC on ")[1].split()[0]
        stolen = compromised.mint(sub="mallory", exp=int(time.time()) + 3000)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            assert _check(stub, stolen).decision == pb.ALLOW  # verified once: now in the token cache
            _replace(compromised.jwks_path, replacement.jwks_document())  # the operator removes the key
            time.sleep(0.3)
            assert _check(stub, stolen).decision == pb.ALLOW  # polling is off: only SIGHUP re-reads
            proc.send_signal(signal.SIGHUP)
            eventually(lambda: _check(stub, stolen).reason == "token_invalid", "SIGHUP re-reading the JWKS file")
            fresh = compromised.mint(sub="mallory", exp=int(time.time()) + 3000)
            assert _check(stub, fresh).reason == "token_invalid"
            assert _check(stub, replacement.mint()).decision == pb.ALLOW
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert "read again, 1 usable key(s)" in err


def test_the_policy_poll_rereads_the_jwks_file_keeps_good_keys_over_a_bad_file_and_obeys_an_empty_one(tmp_path):
    compromised, replacement = _issuers(tmp_path)
    policy_dir = single_policy_dir(tmp_path)
    settings = config.load(with_poll(write_config(tmp_path, compromised.settings, policies=policy_dir),
                                     policy_dir, "0.05"), env={})
    jwks = compromised.jwks_path
    with running_server(settings) as (address, app), grpc.insecure_channel(address) as channel:
        stub, health = pb_grpc.AuthorizerStub(channel), health_pb2_grpc.HealthStub(channel)
        source = app.verifier.issuers[0].source
        stolen = compromised.mint(sub="mallory", exp=int(time.time()) + 3000)
        assert _check(stub, stolen).decision == pb.ALLOW

        _replace(jwks, b"{not json")  # a broken edit: the last good keys keep answering, and it is said why
        eventually(lambda: "not a valid JWKS document" in source.last_error, "the bad file being noticed")
        assert _check(stub, stolen).decision == pb.ALLOW

        _replace(jwks, replacement.jwks_document())  # the fixed edit: the compromised key is gone
        eventually(lambda: _check(stub, stolen).reason == "token_invalid", "the poll re-reading the file")
        assert source.last_error == "" and _check(stub, replacement.mint()).decision == pb.ALLOW

        _replace(jwks, b'{"keys": []}')  # every key withdrawn: every token denied, the Authorizer not ready
        eventually(lambda: _check(stub, replacement.mint()).reason == "token_invalid", "the empty set")
        assert "no usable key" in source.last_error

        def authorizer_not_serving() -> bool:
            answer = health.Check(health_pb2.HealthCheckRequest(service=AUTHORIZER), timeout=10)
            return answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

        eventually(authorizer_not_serving, "the Authorizer reporting not ready (health is refreshed every second)")


def test_a_key_removed_from_the_jwks_url_denies_its_cached_token(tmp_path):
    compromised, replacement = _issuers(tmp_path)
    with LoopbackServer() as web:
        web.serve("/jwks.json", compromised.jwks_document())
        settings = dataclasses.replace(compromised.settings, jwks_file="", jwks_url=web.url())
        cfg = write_config(tmp_path, settings, policies=single_policy_dir(tmp_path))
        env = {"TENANTGATE_POLICIES_POLL_INTERVAL_SECONDS": "0", "TENANTGATE_TOKENS_JWKS_CACHE_SECONDS": "1",
               "TENANTGATE_TOKENS_JWKS_REFRESH_MIN_INTERVAL_SECONDS": "1"}
        with running_server(config.load(cfg, env=env)) as (address, app), grpc.insecure_channel(address) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            stolen = compromised.mint(sub="mallory", exp=int(time.time()) + 3000)
            assert _check(stub, stolen).decision == pb.ALLOW
            web.serve("/jwks.json", replacement.jwks_document())
            # Only the cached token arrives: its hits start the due re-fetch, and the first decision after
            # the new set is held denies it.
            eventually(lambda: _check(stub, stolen).reason == "token_invalid", "the re-fetched set")
            assert not app.verifier.issuers[0].source.peek().with_kid(compromised.kid)
            assert _check(stub, replacement.mint()).decision == pb.ALLOW
