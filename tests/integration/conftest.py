import shutil

import grpc
import pytest

from support.issuers import TestIssuer
from support.server import BUNDLED_POLICIES, running_server, write_config
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


@pytest.fixture()
def workdir(tmp_path):
    """A directory holding a copy of the bundled policies, for CLI commands run in it."""
    shutil.copytree(BUNDLED_POLICIES, tmp_path / "policies")
    return tmp_path


@pytest.fixture(scope="module")
def stub(server):
    address, _app = server
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.AuthorizerStub(channel)
