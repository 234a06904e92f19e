"""Starting the AuthZEN HTTP server: a busy port or unusable TLS files refuse to start, with the key."""

import asyncio
import socket

import pytest

from support.issuers import FixedClock, TestIssuer, verifier_for
from support.server import BUNDLED_POLICIES
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.pdp import DecisionPoint
from tenantgate.errors import ConfigError
from tenantgate.http.routes import Limits
from tenantgate.http.server import HttpOptions, HttpServer
from tenantgate.policy import PolicyStore

LIMITS = Limits(max_body_bytes=1024, max_concurrent_requests=4, max_evaluations=10)


@pytest.fixture()
def pdp(tmp_path):
    clock = FixedClock()
    return DecisionPoint(verifier=verifier_for(TestIssuer(tmp_path, clock=clock), clock=clock),
                         engine=PolicyStore.load(BUNDLED_POLICIES).current,
                         audit=JsonlAuditSink(tmp_path / "audit.jsonl"), clock=clock)


def _ignore(*_args):
    return None


def test_a_busy_port_is_a_config_error(pdp):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(HttpOptions(f"127.0.0.1:{port}", "user_token", LIMITS), pdp, _ignore)
        with pytest.raises(ConfigError, match=f"cannot serve AuthZEN on 127.0.0.1:{port}"):
            asyncio.run(server.start())


def test_unreadable_tls_files_are_a_config_error(pdp, tmp_path):
    (tmp_path / "x.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"http\.cert_file"):
        HttpServer(HttpOptions("127.0.0.1:0", "user_token", LIMITS, str(tmp_path / "x.crt"),
                               str(tmp_path / "x.key")), pdp, _ignore)


def test_start_and_stop_on_the_running_loop(pdp):
    async def cycle():
        server = HttpServer(HttpOptions("127.0.0.1:0", "trusted_pep", LIMITS), pdp, _ignore)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /.well-known/authzen-configuration HTTP/1.1\r\nHost: pdp.test\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        await server.stop()
        return port, answer

    port, answer = asyncio.run(cycle())
    assert port > 0 and answer.startswith(b"HTTP/1.1 200") and b'"http://pdp.test"' in answer
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_an_aiohttp_without_the_internals_the_server_wraps_stops_the_start(pdp, monkeypatch):
    # http/server.py rewrites aiohttp's RawRequestMessage (505 for HTTP/2.0 request lines): an aiohttp without
    # _replace must stop `serve` at start with what to install, not fail each such request later.
    from tenantgate.http import server as http_server

    class WithoutReplace:
        pass

    monkeypatch.setattr(http_server, "RawRequestMessage", WithoutReplace)
    server = HttpServer(HttpOptions("127.0.0.1:0", "user_token", LIMITS), pdp, _ignore)
    with pytest.raises(ConfigError, match=r"aiohttp>=3\.14,<4"):
        asyncio.run(server.start())


def test_the_declared_aiohttp_range_starts_where_web_request_key_exists():
    # intake.SENT_VERSION is a web.RequestKey, new in aiohttp 3.14: "aiohttp>=3.10" let pip keep a 3.13 whose
    # import of tenantgate.http failed (review finding).
    import pathlib
    import re
    import tomllib

    pyproject = tomllib.loads((pathlib.Path(__file__).parents[3] / "pyproject.toml").read_text())
    (spec,) = [dep for dep in pyproject["project"]["dependencies"] if dep.startswith("aiohttp")]
    lowest = tuple(int(part) for part in re.search(r">=([0-9.]+)", spec)[1].split("."))
    assert lowest >= (3, 14), spec
