"""Strict decoding of what tokens and key sets are made of: RFC 8259 JSON and unpadded base64url (RFC 7515).

The strict JSON parser lives in ``tenantgate.core.strictjson`` (entity files use it too) and is re-exported.

Both refuse anything a lenient decoder would let through, because two spellings of one signed value
(duplicate members, non-canonical base64url) let an attacker give one signature two meanings.
Failures are ``ValueError``; callers map them onto their own errors.
"""

from __future__ import annotations

import base64
import binascii

from tenantgate.core.strictjson import MAX_JSON_DEPTH, parse_strict_json

__all__ = ["MAX_JSON_DEPTH", "b64url_decode", "b64url_encode", "parse_strict_json"]

def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; ``ValueError`` for padding, foreign characters or stray bits.

    Canonical means re-encoding gives the same text: two spellings of one value would let an attacker make
    distinct tokens (distinct cache keys, distinct token ids) with one signature.
    """
    if len(segment) % 4 == 1 or not segment.isascii():
        raise ValueError("invalid base64url length")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as err:
        raise ValueError("invalid base64url") from err
    if b64url_encode(raw) != segment:
        raise ValueError("non-canonical base64url")
    return raw
