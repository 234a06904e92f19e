"""serve --workers claims its fixed ports before any worker binds them (SO_REUSEPORT would share them)."""

import socket

import pytest

from tenantgate.cli.shared_ports import check_free, release_claims
from tenantgate.errors import ConfigError


@pytest.fixture()
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_supervisor_cannot_take_a_port_the_first_has_not_bound_yet(free_port):
    # Review finding: the probe bind passed for both supervisors started within ~0.5 s of each other (worker 0
    # binds after building its app), and the kernel split the traffic between the two servers.
    listen = f"127.0.0.1:{free_port}"
    try:
        check_free(listen, "server.listen")  # the first supervisor: its workers have not bound yet
        with pytest.raises(ConfigError, match="another TenantGate serving with workers has claimed it"):
            check_free(listen, "server.listen")
    finally:
        release_claims()
    check_free(listen, "server.listen")  # released with the supervisor: the port can be used again
    try:  # another spelling of the same port overlaps it (0.0.0.0 covers 127.0.0.1): refused as well
        with pytest.raises(ConfigError, match="has claimed it"):
            check_free(f"0.0.0.0:{free_port}", "http.listen")
    finally:
        release_claims()


def test_port_0_claims_nothing():
    check_free("127.0.0.1:0", "server.listen")
    check_free("127.0.0.1:0", "server.listen")
