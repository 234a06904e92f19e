"""intake.BodyDecoder: request bodies are decoded by TenantGate, completely or not at all, within the size bound."""

import gzip
import zlib

import pytest

from tenantgate.http.intake import BodyDecoder, Refused

BODY = b'{"subject": {"type": "user", "id": "alice"}}'


def _decode(encoding, data, max_bytes=1024, step=7):
    decoder = BodyDecoder(encoding, max_bytes)
    out = b"".join(decoder.feed(data[i:i + step]) for i in range(0, len(data), step))
    decoder.finish()
    return out


@pytest.mark.parametrize(("encoding", "data"), [
    ("", BODY), ("identity", BODY), ("gzip", gzip.compress(BODY)), ("GZIP", gzip.compress(BODY)),
    ("deflate", zlib.compress(BODY)), ("gzip", gzip.compress(BODY[:9]) + gzip.compress(BODY[9:])),
])
def test_complete_bodies_are_decoded_whatever_the_chunking(encoding, data):
    assert _decode(encoding, data) == _decode(encoding, data, step=1) == BODY


@pytest.mark.parametrize(("encoding", "data"), [
    ("gzip", gzip.compress(BODY)[:-8]), ("gzip", gzip.compress(BODY)[:-1]), ("deflate", zlib.compress(BODY)[:-4]),
    ("gzip", gzip.compress(BODY)[:10]),
])
def test_truncated_data_is_refused_400_when_the_body_ends(encoding, data):
    with pytest.raises(Refused) as refused:
        _decode(encoding, data)
    assert refused.value.status == 400 and "cut off" in refused.value.message and refused.value.close


def test_a_wrong_checksum_is_refused_400():
    data = bytearray(gzip.compress(BODY))
    data[-8] ^= 0xFF
    with pytest.raises(Refused) as refused:
        _decode("gzip", bytes(data))
    assert refused.value.status == 400 and "could not be decoded" in refused.value.message


def test_output_beyond_the_bound_is_413_without_decoding_the_rest():
    bomb = gzip.compress(b" " * 10_000_000)
    decoder = BodyDecoder("gzip", 1024)
    with pytest.raises(Refused) as refused:
        decoder.feed(bomb)
    assert refused.value.status == 413


def test_compressed_input_beyond_the_bound_is_413_even_when_it_decodes_to_nothing():
    empty_members = gzip.compress(b"") * 100
    with pytest.raises(Refused) as refused:
        _decode("gzip", empty_members, max_bytes=1024)
    assert refused.value.status == 413
