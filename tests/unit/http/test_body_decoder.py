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
    # One raw deflate stream of 500 empty stored blocks and a final one: 2,505 bytes that decode to nothing.
    empty_blocks = b"\x00\x00\x00\xff\xff" * 500 + b"\x01\x00\x00\xff\xff"
    assert zlib.decompress(empty_blocks, -15) == b""
    with pytest.raises(Refused) as refused:
        _decode("deflate", empty_blocks, max_bytes=1024)
    assert refused.value.status == 413


def _raw_deflate(data):
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(("encoding", "data", "said"), [
    ("deflate", _raw_deflate(b"") * 1000, "after the end of the deflate stream"),
    ("deflate", zlib.compress(b"") * 1000, "after the end of the deflate stream"),
    ("deflate", zlib.compress(BODY) + zlib.compress(BODY), "after the end of the deflate stream"),
    ("gzip", gzip.compress(b"") * 1000, "more than 16 gzip members"),
])
def test_many_empty_streams_are_refused_before_they_cost_a_decompressor_each(encoding, data, said):
    # Review finding: a 1 MiB body of empty raw-deflate streams made the decoder build a decompressor every two
    # bytes on the event loop: 1.1 s per MiB, every gRPC Check on the process past its deadline meanwhile.
    with pytest.raises(Refused) as refused:
        _decode(encoding, data, max_bytes=1 << 20, step=1 << 16)
    assert refused.value.status == 400 and said in refused.value.message and refused.value.close
    sixteen = b"".join(gzip.compress(BODY[i:i + 3]) for i in range(0, 48, 3))
    assert _decode("gzip", sixteen) == BODY[:48]  # up to 16 members are decoded
