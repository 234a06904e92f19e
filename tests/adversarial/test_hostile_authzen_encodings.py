"""Hostile content encodings at the AuthZEN HTTP edge: only identity, gzip and deflate decoded, by TenantGate
itself; anything else 415, broken or cut-off data 400 with our headers, a bomb 413; never a 5xx and never an
ERROR traceback a client can cause at will.
"""

import gzip
import logging
import time
import zlib

import httpx
import pytest

from support.authzen import bearer
from support.http_intake import (
    BODY,
    EVALUATION,
    _errors,
    _exchange,
    _port,
    _request,
    _status,
)

# ------------------------------------------------------------------ encodings (finding 4)


@pytest.mark.parametrize("encodings", [["foo"], ["gzip, br"], ["br"], ["x-gzip"], ["gzip", "foo"],
                                       ["identity", "gzip"]])
def test_an_encoding_we_do_not_decode_is_415(server, alice, encodings):
    head, body = _exchange(_port(server), _request(token=alice, body=BODY, headers=[
        *(f"Content-Encoding: {e}" for e in encodings), "X-Request-ID: r-3"]))
    assert _status(head) == 415, (head, body)
    assert "X-Request-ID: r-3" in head and "Accept-Encoding: identity, gzip, deflate" in head


@pytest.mark.parametrize(("encoding", "data"), [("identity", BODY), ("IDENTITY", BODY), ("gzip", gzip.compress(BODY)),
                                                ("deflate", zlib.compress(BODY))])
def test_identity_gzip_and_deflate_are_decoded(server, alice, encoding, data):
    response = httpx.post(f"{server[0]}{EVALUATION}", content=data, headers=bearer(
        alice, **{"Content-Type": "application/json", "Content-Encoding": encoding}))
    assert response.status_code == 200 and response.json()["decision"] is True


def test_a_gzip_bomb_is_413(server, alice):
    bomb = gzip.compress(b"{" + b" " * (20 * 1024 * 1024) + b"}")
    head, _body = _exchange(_port(server), _request(token=alice, body=bomb, headers=["Content-Encoding: gzip"]),
                            timeout=10)
    assert _status(head) == 413


# ------------------------------------------------------------------ encodings decoded by TenantGate (review 7)


@pytest.mark.parametrize("encoding", ["zstd", "br", "ZSTD"])
def test_an_encoding_the_http_library_could_decode_but_we_do_not_is_415_not_its_400(server, alice, encoding):
    # Review finding: aiohttp's parser met "zstd" first and answered 400 "Can not decode content-encoding:
    # zstandard (zstd). Please install backports.zstd", without X-Request-ID, where `compress` was 415.
    head, body = _exchange(_port(server), _request(token=alice, body=BODY, headers=[
        f"Content-Encoding: {encoding}", "X-Request-ID: r-7"]))
    assert _status(head) == 415, (head, body)
    assert "X-Request-ID: r-7" in head and "Accept-Encoding: identity, gzip, deflate" in head
    assert "install" not in body


def _raw_deflate(data):
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


BROKEN = "could not be decoded"
CUT = "cut off"


@pytest.mark.parametrize(("encoding", "data", "says"), [
    ("deflate", b"garbagegarbage", BROKEN),
    ("gzip", gzip.compress(BODY)[:-8] + b"\0" * 8, BROKEN),  # bad CRC
    ("deflate", zlib.compress(BODY)[:20] + b"\0" * 20, BROKEN),
    # Review finding: truncated data was accepted (the CRC never checked) or got aiohttp's bare 400.
    ("gzip", gzip.compress(BODY)[:-8], CUT),  # no CRC-32 and size trailer
    ("gzip", gzip.compress(BODY)[:-4], CUT),  # CRC, no size
    ("gzip", gzip.compress(BODY)[:-12], CUT),  # cut inside the compressed data
    ("gzip", gzip.compress(BODY) + gzip.compress(BODY)[:-8], CUT),  # a second member cut short
    ("deflate", zlib.compress(BODY)[:-4], CUT),  # no Adler-32: aiohttp's bare "400 deflate" without X-Request-ID
    ("deflate", _raw_deflate(BODY)[:-3], CUT),
], ids=["deflate-garbage", "gzip-bad-crc", "deflate-garbage-tail", "gzip-no-trailer", "gzip-no-size",
        "gzip-cut-in-data", "gzip-second-member-cut", "deflate-no-adler", "raw-deflate-cut"])
@pytest.mark.parametrize("path", [EVALUATION, "/access/v1/evaluations"])
def test_broken_or_truncated_compressed_data_is_400_with_our_headers_and_no_decision(server, alice, caplog,
                                                                                     encoding, data, says, path):
    caplog.set_level(logging.DEBUG)
    head, body = _exchange(_port(server), _request(path, token=alice, body=data, headers=[
        f"Content-Encoding: {encoding}", "X-Request-ID: r-2"]))
    assert _status(head) == 400, (head, body)
    assert "X-Request-ID: r-2" in head and "x-tenantgate-decision-id" not in head.lower()
    assert body.startswith("the request body could not be decoded:") and says in body, body
    time.sleep(0.2)  # whatever aiohttp does with the rest of the connection, it has done it
    assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]


@pytest.mark.parametrize(("encoding", "data"), [
    ("gzip", gzip.compress(BODY[:40]) + gzip.compress(BODY[40:])),  # two members (RFC 1952 allows it)
    ("deflate", _raw_deflate(BODY)),  # deflate without its zlib wrapper, as some clients send it
    ("Gzip", gzip.compress(BODY)),
], ids=["gzip-two-members", "raw-deflate", "gzip-capitalised"])
def test_complete_compressed_bodies_are_still_decoded(server, alice, encoding, data):
    response = httpx.post(f"{server[0]}{EVALUATION}", content=data, headers=bearer(
        alice, **{"Content-Type": "application/json", "Content-Encoding": encoding}))
    assert response.status_code == 200 and response.json()["decision"] is True, response.text


def test_a_chunked_gzip_bomb_without_content_length_is_413(server, alice):
    bomb = gzip.compress(b"{" + b" " * (20 * 1024 * 1024) + b"}")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(bomb[i:i + 4096]), bomb[i:i + 4096])
                       for i in range(0, len(bomb), 4096)) + b"0\r\n\r\n"
    head, body = _exchange(_port(server), _request(token=alice, body=chunked, headers=[
        "Content-Encoding: gzip", "Transfer-Encoding: chunked", "X-Request-ID: r-9"]), timeout=10)
    assert _status(head) == 413 and "X-Request-ID: r-9" in head, (head, body)
