import grpc
import pytest

from support.issuers import TestIssuer
from support.server import running_server, write_config
from tenantgate import config
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return TestIssuer(tmp_path_factory.mktemp("issuer"), alg="ES256")


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("server")
    settings = config.load(write_config(tmp, issuer.settings), env={})
    with running_server(settings) as (address, app):
        yield address, app


@pytest.fixture(scope="module")
def stub(server):
    address, _app = server
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.AuthorizerStub(channel)
