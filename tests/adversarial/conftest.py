"""Fixtures shared by the adversarial modules. Module-scoped: each module that asks gets its own."""

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from support.authzen import authzen_server, entity_policies
from support.envoy import EXT_AUTHZ_ROUTES
from support.issuers import NOW, FixedClock, TestIssuer, verifier_for
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.identity import JwtVerifier

# ------------------------------------------------------------------ the AuthZEN intake (test_hostile_authzen_*)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def envoy_served(tmp_path_factory, issuer):
    """A real server with ext_authz on the test routes (test_hostile_envoy_*): (Authorization stub, app). The
    channel sends messages up to 4 MiB, so a request over the server's 1 MiB limit reaches the server."""
    tmp = tmp_path_factory.mktemp("ext-authz")
    settings_ = config.load(write_config(tmp, issuer.settings, extra=EXT_AUTHZ_ROUTES), env={})
    options = [("grpc.max_send_message_length", 4 << 20)]
    with running_server(settings_) as (address, app), grpc.insecure_channel(address, options=options) as channel:
        yield ext_grpc.AuthorizationStub(channel), app


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("intake")
    with authzen_server(tmp, issuer, entity_policies(tmp), max_body_bytes=8192, max_concurrent_requests=4) as running:
        yield running


@pytest.fixture(scope="module")
def alice(issuer):
    return issuer.mint(tenant="acme", sub="alice", roles=["viewer"])


# ------------------------------------------------------------------ hostile tokens (test_hostile_tokens_*)


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    return FixedClock(NOW)  # never advanced in this module


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path_factory.mktemp("es"), alg="ES256", clock=clock)


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    return TestIssuer(tmp_path_factory.mktemp("rs"), alg="RS256", issuer="https://rsa.test", clock=clock)


@pytest.fixture(scope="module")
def es2(tmp_path_factory: pytest.TempPathFactory, clock: FixedClock) -> TestIssuer:
    # A second trusted issuer with the same algorithm: its key must not speak for the first.
    return TestIssuer(tmp_path_factory.mktemp("es2"), alg="ES256", issuer="https://two.test", clock=clock)


@pytest.fixture(scope="module")
def verifier(es: TestIssuer, es2: TestIssuer, rs: TestIssuer, clock: FixedClock) -> JwtVerifier:
    return verifier_for(es, es2, rs, clock=clock, cache_size=0)
