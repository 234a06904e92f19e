"""Hostile uploads at the AuthZEN HTTP edge, answered before or instead of their body: refused from the headers
(no usable token, 100-continue, unknown expectations), hang-ups and broken framing; never a 5xx, never an ERROR
traceback a client can cause at will, and no connection left out of step after an early answer.

The event loop serving AuthZEN also serves gRPC (Envoy ext_authz Checks with deadlines), so a caller without
a usable token must be refused from its headers, before its body is read or parsed.
"""

import logging
import socket
import time

import pytest

from support.http_intake import (
    BODY,
    EVALUATION,
    _errors,
    _exchange,
    _own_server,
    _port,
    _request,
    _status,
)

# ------------------------------------------------------------------ refused before the body (finding 1)


@pytest.mark.parametrize("authorization", [[], ["Authorization: Basic YTpi"],
                                           ["Authorization: Bearer a", "Authorization: Bearer b"]])
def test_a_caller_without_a_usable_authorization_header_is_refused_before_its_body_arrives(server, authorization):
    # 10 bytes of a declared 1000, then nothing: answered at once, not after the 10 s body timeout.
    started = time.monotonic()
    head, body = _exchange(_port(server), _request(headers=authorization, length=1000, body=b'{"subject"'))
    assert _status(head) == 401, (head, body)
    assert time.monotonic() - started < 2
    assert "x-tenantgate-decision-id" in head.lower()  # a decision: audited like every 401


def test_an_unauthenticated_body_is_never_parsed(server):
    # Not JSON at all: a parser would say 400; the caller is refused on its (missing) token first.
    head, body = _exchange(_port(server), _request(body=b"[" * 5000, headers=["X-Request-ID: r-1"]))
    assert _status(head) == 401 and body.startswith("token_missing")
    assert "X-Request-ID: r-1" in head and 'WWW-Authenticate: Bearer realm="tenantgate"' in head


def test_a_refused_token_is_refused_before_its_body_is_parsed(tmp_path):
    port, issuer, stop = _own_server(tmp_path, verifier_first=True)
    try:
        expired = issuer.mint(tenant="acme", sub="alice", now=issuer.clock.now() - 3600)
        for token, reason in (("nope", "token_invalid"), (expired, "token_expired")):
            head, body = _exchange(port, _request(token=token, body=b"[" * 5000))
            assert _status(head) == 401 and body.startswith(reason), (head, body)
            assert 'error="invalid_token"' in head
            # ... and it never waits for a body that does not come.
            head, body = _exchange(port, _request(token=token, length=1000, body=b"{"))
            assert _status(head) == 401, (head, body)
        good = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
        head, body = _exchange(port, _request(token=good, body=BODY))
        assert _status(head) == 200 and '"decision": true' in body
    finally:
        stop()


# ------------------------------------------------------------------ broken bodies and hang-ups (finding 3)




def test_a_client_hanging_up_mid_body_is_no_error(server, alice, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        sock.sendall(_request(token=alice, length=1000, body=b'{"subject"'))
        time.sleep(0.2)
    time.sleep(0.3)
    assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]
    assert any("hung up" in r.getMessage() for r in caplog.records if r.name == "tenantgate.http")


@pytest.mark.parametrize("framing", [
    ["Transfer-Encoding: chunked"],  # with a chunk size that is not hex
    ["Transfer-Encoding: chunked", "Content-Length: 5"],
])
def test_framing_errors_are_400_without_an_error_traceback(server, alice, caplog, framing):
    caplog.set_level(logging.DEBUG)
    chunked = b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"
    head, _body = _exchange(_port(server), _request(token=alice, headers=framing, body=chunked))
    assert _status(head) == 400
    time.sleep(0.2)
    assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]


# ------------------------------------------------------------------ 100-continue and expectations (finding 4)


@pytest.mark.parametrize(("token", "length", "status"), [(True, 10**9, 413), (False, len(BODY), 401)])
def test_a_request_refused_from_its_headers_gets_no_100_continue(server, alice, token, length, status):
    head, _body = _exchange(_port(server), _request(token=alice if token else None, length=length, headers=[
        "Expect: 100-continue", "X-Request-ID: r-4"]))
    assert _status(head) == status, head
    assert "X-Request-ID: r-4" in head


def test_an_admitted_request_gets_100_continue_and_its_decision(server, alice):
    head, body = _exchange(_port(server), _request(token=alice, length=len(BODY), headers=["Expect: 100-continue"]),
                             then=BODY)
    assert _status(head) == 200 and '"decision": true' in body


def test_an_unknown_expectation_is_417_with_the_request_id(server, alice):
    head, _body = _exchange(_port(server), _request(token=alice, body=BODY, headers=[
        "Expect: something", "X-Request-ID: r-5"]))
    assert _status(head) == 417 and "X-Request-ID: r-5" in head


# ------------------------------------------------------------------ connections after an early answer (review 2)


def _head(*headers):
    """The head of a request that announces a body and withholds it (as after ``Expect: 100-continue``)."""
    return ("\r\n".join([f"POST {EVALUATION} HTTP/1.1", "Host: x", *headers]) + "\r\n\r\n").encode()


def _answers(port, data, count, timeout=3.0):
    """Send ``data`` on one connection; the heads of the first ``count`` answers (fewer if it closes first)."""
    heads = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while len(heads) < count:
                head, separator, rest = received.partition(b"\r\n\r\n")
                if separator:
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    if len(rest) >= length:
                        heads.append(head.decode("latin-1"))
                        received = rest[length:]
                        continue
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pass
    return heads


_ANNOUNCED = f"Content-Length: {len(BODY)}"


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """``(port, issuer)`` of an ``_own_server``: its ``stop()`` also ends the connections aiohttp still drains
    (for up to 10 s) after answering a request whose body never came."""
    port, issuer, stop = _own_server(tmp_path_factory.mktemp("withheld"), verifier_first=True)
    yield port, issuer
    stop()


@pytest.mark.parametrize(("headers", "status"), [
    (["Content-Type: application/json", _ANNOUNCED], 401),
    (["Content-Type: application/json", "Authorization: Bearer {alice}", "Content-Length: 1000000000"], 413),
    (["Content-Type: application/json", "Authorization: Bearer {alice}", "Content-Encoding: foo", _ANNOUNCED], 415),
    (["Content-Type: text/plain", "Authorization: Bearer {alice}", _ANNOUNCED], 400),
    (["Content-Type: application/json", "Transfer-Encoding: chunked"], 401),
])
@pytest.mark.parametrize("expect", ["100-continue", "something"])  # the second: 417, before the rest
def test_an_answer_before_a_withheld_body_closes_the_connection(own_server, headers, status, expect):
    # The client may withhold the body it announced; had the connection stayed open, aiohttp would read the
    # start of the client's next request as that body and answer it 400 BadHttpMethod (RFC 9110 10.1.1).
    port, issuer = own_server
    alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
    request = _head(*(h.format(alice=alice) for h in headers), f"Expect: {expect}", "X-Request-ID: r-6")
    head, _body = _exchange(port, request)
    assert _status(head) == (status if expect == "100-continue" else 417), head
    assert "connection: close" in head.lower() and "X-Request-ID: r-6" in head, head


def test_a_refusal_after_the_whole_body_arrived_keeps_the_connection(server, alice):
    # Refused from the headers, but the body is in (unread): the connection is in step, so it stays open.
    pipelined = (_request(body=BODY) + _request(token=alice, body=BODY)
                 + _request(token=alice, body=BODY, headers=["Content-Encoding: foo"])
                 + _request(token=alice, body=BODY))
    heads = _answers(_port(server), pipelined, 4)
    assert [_status(head) for head in heads] == [401, 200, 415, 200], heads
    assert not any("connection: close" in head.lower() for head in heads)
