"""What idle or abandoned connections may cost a server: the gRPC and health ports close connections with no
call in flight, ``serve`` raises its soft open-files limit to the hard one, and ``accept()`` failing for want
of descriptors is one log line and a count, not a traceback per attempt. Loopback only; every wait is bounded.
"""

import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.request import urlopen

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.issuers import TestIssuer
from support.server import stop_process, write_config
from support.waiting import eventually
from tenantgate import app as application
from tenantgate import config
from tenantgate.observability.logging import AcceptFailureLog
from tenantgate.rpc.authorizer import AuthorizerService
from tenantgate.rpc.server import GrpcServer, ServerOptions
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]
# The HTTP/2 client preface and an empty SETTINGS frame: a connection that is set up, then never used.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
GOAWAY = 0x7  # HTTP/2 frame type
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and process limits")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _req(token):
    return pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme"))


@contextmanager
def _grpc_server(tmp_path: Path, idle_seconds: float) -> Iterator[tuple[TestIssuer, GrpcServer]]:
    """A real GrpcServer (with a health port) closing connections idle for ``idle_seconds``, on a loop of its own."""
    issuer = TestIssuer(tmp_path)
    built = application.build(config.load(write_config(tmp_path, issuer.settings), env={}))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-grpc-loop", daemon=True)
    thread.start()

    async def start() -> GrpcServer:  # grpc.aio binds a server to the loop it is created on
        server = GrpcServer(ServerOptions("127.0.0.1:0", 1 << 20, 100, 1.0, health_listen="127.0.0.1:0",
                                          max_connection_idle_seconds=idle_seconds),
                            AuthorizerService(built.pdp), built.ready)
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield issuer, server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        application.close(built)


def _frame_types(data: bytes) -> list[int]:
    types, at = [], 0
    while at + 9 <= len(data):
        types.append(data[at + 3])
        at += 9 + int.from_bytes(data[at:at + 3], "big")
    return types


def _until_closed(connection: socket.socket, deadline: float) -> bytes | None:
    """What the server sent until it closed ``connection``; None when it was still open at ``deadline``."""
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        connection.settimeout(min(left, 0.2))
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def test_idle_http2_connections_get_goaway_and_are_closed_on_the_grpc_and_health_ports(tmp_path):
    # Review finding: an idle HTTP/2 connection held ~15 KiB and a descriptor until the client left.
    with _grpc_server(tmp_path, idle_seconds=1) as (_issuer, server):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5)
                for port in [server.port] * 10 + [server.health_port] * 3]
        try:
            for connection in idle:
                connection.sendall(PREFACE)
            deadline = time.monotonic() + 8  # the idle limit is 1 s
            answers = [_until_closed(connection, deadline) for connection in idle]
        finally:
            for connection in idle:
                connection.close()
    assert all(answer is not None for answer in answers), "the server kept idle connections open"
    assert all(GOAWAY in _frame_types(answer) for answer in answers if answer is not None)


def test_a_channel_idle_past_the_limit_reconnects_on_its_next_call_and_a_stream_in_flight_is_not_idle(tmp_path):
    with _grpc_server(tmp_path, idle_seconds=1) as (issuer, server):
        token = issuer.mint(tenant="acme", sub="vera", roles=["viewer"])
        states: list[grpc.ChannelConnectivity] = []
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            channel.subscribe(states.append, try_to_connect=True)
            stub = pb_grpc.AuthorizerStub(channel)
            assert stub.Check(_req(token), timeout=10).decision == pb.ALLOW
            time.sleep(2.5)  # idle past the limit: the server closes the connection
            assert stub.Check(_req(token), timeout=10).decision == pb.ALLOW  # no call fails
            channel.unsubscribe(states.append)
        ready = states.index(grpc.ChannelConnectivity.READY)
        assert grpc.ChannelConnectivity.IDLE in states[ready:], states  # the connection was closed meanwhile

        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                                timeout=20)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(2.5)  # a stream is a call in flight: its connection is not idle
            assert watch.is_active()
            watch.cancel()



def test_health_watch_streams_cannot_take_the_slots_probes_and_decisions_need(tmp_path):
    # Review finding: a Health/Watch stream holds a call slot for as long as the client keeps it (the idle timeout
    # never fires), so 64 of them on the plaintext health port (its maximum_concurrent_rpcs) made every probe's
    # Check fail RESOURCE_EXHAUSTED, and 100 on the gRPC port (here its max_concurrent_rpcs) every decision.
    with _grpc_server(tmp_path, 300.0) as (issuer, server):
        # The health port takes 4 calls per connection: 16 connections carry the 64 Watch streams.
        for port, slots, connections in ((server.health_port, 64, 16), (server.port, 100, 4)):
            options = [("grpc.use_local_subchannel_pool", 1)]
            channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)]
            watches = [health_pb2_grpc.HealthStub(channels[i % connections]).Watch(
                health_pb2.HealthCheckRequest(service=f"s{i}"), timeout=30) for i in range(slots)]
            opened = refused = 0
            for watch in watches:
                try:
                    next(watch)
                    opened += 1
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    refused += 1
            assert opened == slots // 2 and refused == slots - slots // 2, (port, opened, refused)
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as probe:
                assert health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=10).status \
                    == health_pb2.HealthCheckResponse.SERVING
                if port == server.port:
                    token = issuer.mint(tenant="acme", sub="vera", roles=["viewer"])
                    assert pb_grpc.AuthorizerStub(probe).Check(_req(token), timeout=10).decision == pb.ALLOW
            for watch in watches:
                watch.cancel()
            for channel in channels:
                channel.close()



def test_calls_whose_request_never_arrives_cannot_keep_probes_out_of_the_health_port(tmp_path):
    # Review finding: the plaintext health port capped calls at 64 for the whole port, and a call whose request
    # message never arrives (no deadline) holds its slot for good: 64 of them failed every probe
    # RESOURCE_EXHAUSTED. Now each connection carries at most 4 calls and nothing is shared between peers.
    arrived = threading.Event()

    def never_sent():
        arrived.wait()
        yield from ()

    with _grpc_server(tmp_path, 300.0) as (_issuer, server):
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{server.health_port}", options=options) for _ in range(50)]
        held = [channels[i % 50].stream_unary("/grpc.health.v1.Health/Check").future(never_sent())
                for i in range(200)]
        time.sleep(1)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.health_port}", options=options) as probe:
                assert health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=10).status \
                    == health_pb2.HealthCheckResponse.SERVING
        finally:
            arrived.set()
            for call in held:
                call.cancel()
            for channel in channels:
                channel.close()

def test_reflection_streams_cannot_take_the_slots_decisions_need(tmp_path):
    # Review finding: a ServerReflectionInfo stream left open holds a call slot too; 100 of them (here
    # max_concurrent_rpcs) refused every decision RESOURCE_EXHAUSTED.
    import queue

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    def requests(pending):
        while (request := pending.get()) is not None:
            yield request

    with _grpc_server(tmp_path, 300.0) as (issuer, server):
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) for _ in range(4)]
        queues, streams, opened = [], [], 0
        for i in range(100):
            pending: queue.Queue = queue.Queue()
            pending.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            stream = reflection_pb2_grpc.ServerReflectionStub(channels[i % 4]).ServerReflectionInfo(
                requests(pending), timeout=30)
            queues.append(pending)
            streams.append(stream)
            try:
                next(stream)
                opened += 1
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert opened == 50
        token = issuer.mint(tenant="acme", sub="vera", roles=["viewer"])
        with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as probe:
            assert pb_grpc.AuthorizerStub(probe).Check(_req(token), timeout=10).decision == pb.ALLOW
        for pending in queues:
            pending.put(None)
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


def _accept_lines(stderr: str) -> list[dict]:
    """The JSON log lines about failed accepts (asyncio's own or ours)."""
    lines = []
    for text in stderr.splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # gRPC's C core writes plain lines of its own
        if line.get("logger") in ("asyncio", "tenantgate.accept") and "accept" in line.get("message", ""):
            lines.append(line)
    return lines


@contextmanager
def _serving(tmp_path: Path, limits: tuple[int, int], extra: str = "") -> Iterator[tuple[subprocess.Popen, int]]:
    """``tenantgate serve`` under the open-files limits ``(soft, hard)``; yields the process and its gRPC port."""
    issuer = TestIssuer(tmp_path)
    port = _free_port()
    text = write_config(tmp_path, issuer.settings).read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"', 1)
    cfg = tmp_path / "limits.toml"
    cfg.write_text(text + extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    proc = subprocess.Popen([*TENANTGATE, "serve", "--config", str(cfg)], env=env, stdout=subprocess.PIPE,
                            stderr=(tmp_path / "stderr").open("wb"), text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits))
    try:
        banner = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in banner, (tmp_path / "stderr").read_text()
        yield proc, port
    finally:
        stop_process(proc)


@linux_only
def test_serve_raises_its_soft_open_files_limit_to_the_hard_one(tmp_path):
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"a hard open-files limit of {hard} leaves nothing to raise")
    with _serving(tmp_path, (256, hard)) as (proc, _port):
        assert resource.prlimit(proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)


@linux_only
def test_accept_failing_for_want_of_descriptors_is_one_line_and_a_count_and_the_port_recovers(tmp_path):
    # Review finding: at the descriptor limit asyncio logged every failed accept of the AuthZEN port with a
    # traceback, up to the listen backlog per retry (2,560 in 7 s); the port stopped answering meanwhile.
    limit = 160  # soft and hard: nothing to raise
    http_port = _free_port()
    with _serving(tmp_path, (limit, limit), f'\n[http]\nlisten = "127.0.0.1:{http_port}"\n') as (proc, port):
        held: list[socket.socket] = []
        try:
            for _ in range(limit + 20):  # idle HTTP/2 connections take every descriptor the server may open
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                held[-1].sendall(PREFACE)
            eventually(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) >= limit - 1, "the server at its limit")
            for _ in range(3):  # AuthZEN callers wait in the listen backlog: every accept of theirs fails
                waiting = socket.create_connection(("127.0.0.1", http_port), timeout=5)
                waiting.sendall(b"GET /.well-known/authzen-configuration HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(waiting)
            time.sleep(3)  # asyncio retries once a second
        finally:
            for connection in held:
                connection.close()
        eventually(lambda: _answers(f"http://127.0.0.1:{http_port}/.well-known/authzen-configuration"),
                   "AuthZEN answering once the descriptors are free")
    lines = _accept_lines((tmp_path / "stderr").read_text())
    assert 1 <= len(lines) <= 3, f"{len(lines)} lines about failed accepts"
    assert not [line for line in lines if "error" in line]  # no traceback


def _answers(url: str) -> bool:
    try:
        return urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def _context(error: int = 24) -> dict:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        return {"message": "socket.accept() out of system resource", "exception": OSError(error, "Too many open files"),
                "socket": listening.dup()}


def test_repeated_accept_failures_are_logged_once_then_counted_once_per_interval(caplog):
    loop = asyncio.new_event_loop()
    passed_on: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
    failures = AcceptFailureLog(interval=0.2)
    failures.install(loop)
    context = _context()
    try:
        with caplog.at_level(logging.ERROR, logger="tenantgate.accept"):
            for _ in range(500):
                loop.call_exception_handler(context)
            assert len(caplog.records) == 1 and "Too many open files" in caplog.records[0].getMessage()
            loop.run_until_complete(asyncio.sleep(0.4))  # one interval later: the count, once
            assert len(caplog.records) == 2 and "499 more times" in caplog.records[1].getMessage()
            loop.run_until_complete(asyncio.sleep(0.4))  # nothing new: nothing more
            assert len(caplog.records) == 2
            loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
            assert [c["message"] for c in passed_on] == ["something else"]  # to the handler before
            failures.close()
            assert loop.get_exception_handler() is not failures
    finally:
        context["socket"].close()
        loop.close()
