"""The h2load gate's parsing: gRPC framing, h2load's per-request log and the server's call counts by code."""

import http.server
import threading

from bench import h2load


def test_a_grpc_frame_is_an_uncompressed_length_prefixed_message():
    assert h2load.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert h2load.grpc_frame(b"x" * 300)[:5] == b"\x00\x00\x00\x01\x2c"


def test_log_rows_read_start_status_and_duration_and_skip_anything_else(tmp_path):
    log = tmp_path / "h2load.log"
    log.write_text("1700000000000000\t200\t1500\n1700000000002000\t-1\t900\nnot a row\n\n1700000000004000\t200\n")
    assert h2load._log_rows(log) == [(1_700_000_000.0, 200, 0.0015), (1_700_000_000.002, -1, 0.0009)]


def test_handled_calls_are_counted_by_code_for_authorizer_check_only():
    body = (b'# HELP tenantgate_grpc_server_handled_total gRPC calls\n'
            b'tenantgate_grpc_server_handled_total{code="OK",method="/tenantgate.v1.Authorizer/Check"} 41.0\n'
            b'tenantgate_grpc_server_handled_total{code="RESOURCE_EXHAUSTED",method="/tenantgate.v1.Authorizer/Check"}'
            b' 2.0\n'
            b'tenantgate_grpc_server_handled_total{code="OK",method="/grpc.health.v1.Health/Check"} 9.0\n')

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        assert h2load.handled_by_code(url) == {"OK": 41.0, "RESOURCE_EXHAUSTED": 2.0}
    finally:
        server.shutdown()
        server.server_close()
