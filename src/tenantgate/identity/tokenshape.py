"""The unverified token's shape: everything checked of a raw token before its signature is.

A compact JWS of three canonical base64url segments; a header and a payload that are strict-JSON objects of
bounded complexity (counted before they are parsed); a header that names a supported algorithm, an opaque key
id and, when required, the ``at+jwt`` type, and carries no parameter that would let the token choose its own
key. Every refusal is ``TokenInvalid``. Used by ``JwtVerifier.verify`` (``tenantgate.identity.verifier``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tenantgate.config import SUPPORTED_ALGORITHMS
from tenantgate.errors import TokenInvalid
from tenantgate.identity.encoding import b64url_decode, parse_strict_json

# Three non-empty segments of the unpadded base64url alphabet, nothing else: no '+', '/', '=', whitespace
# or a fourth segment. Explicit ASCII ranges (not \w) so no Unicode digit or letter slips through.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# Header parameters that would let the token choose its own key or extend processing rules. A key comes
# only from the configured issuer's set (by opaque kid); 'crit' and 'b64' (RFC 7797) change what is signed.
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit", "b64"})
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §2.1

MAX_KID_CHARS = 256
# Most JSON values (counted from above as the ',', '{' and '[' characters outside strings) a header or
# payload may hold. Parsing runs before the signature is checked and costs Python work per value (the
# duplicate-name hook, the shape walk: ~1 µs each on 2 cores), so a forged 16 KiB payload of '[{},{},...]'
# took 4-14 ms of the event loop (review finding). Real headers hold a handful of values; real payloads a
# few dozen, and identity providers that list groups or permissions a thousand or so (review finding: 1,024
# refused a signed token with 1,030 groups): 2,048 keeps the worst forged payload near 1 ms. A deployment
# that raises tokens.max_token_bytes for larger tokens gets one value per 8 bytes above that.
MAX_HEADER_JSON_VALUES = 64
MAX_PAYLOAD_JSON_VALUES = 2048


def max_payload_values(max_token_bytes: int) -> int:
    """The most JSON values a token payload may hold under ``tokens.max_token_bytes``."""
    return max(MAX_PAYLOAD_JSON_VALUES, max_token_bytes // 8)


# A JSON string, or an unterminated one with the rest of the text: one pass from left to right. Review finding:
# without the end alternative, a string that never closes was scanned to the end again from each quote inside it
# (``"\\"\\"\\"...``), quadratic: 0.43 s of the event loop for a 16 KB forged token, before any signature check.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)


def split_compact_jws(token: str) -> tuple[str, str, str]:
    """The header, payload and signature segments of ``token``; ``TokenInvalid`` unless it is exactly three
    non-empty segments of the unpadded base64url alphabet."""
    if _COMPACT_JWS.fullmatch(token) is None:
        raise TokenInvalid("token is not a compact JWS of three base64url segments")
    header_segment, payload_segment, signature_segment = token.split(".")
    return header_segment, payload_segment, signature_segment


def decode_segment(segment: str, name: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as err:
        raise TokenInvalid(f"token {name} is not canonical base64url") from err


def decode_json_object(segment: str, name: str, max_values: int) -> dict[str, Any]:
    raw = decode_segment(segment, name)
    try:
        # Strict UTF-8 from bytes to str ourselves: json.loads(bytes) would also accept UTF-16/32.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenInvalid(f"token {name} is not UTF-8") from err
    # Counted in C before the parser does Python work per value, before any signature check: every value but
    # the first in its array or object follows a ',', and every array or object opens with '{' or '['. What
    # strings hold does not count (a claim holding commas is one value).
    outside = _JSON_STRING.sub("", text)
    if outside.count(",") + outside.count("{") + outside.count("[") > max_values:
        raise TokenInvalid(f"token {name} is too complex: more than {max_values} JSON values (the payload may hold "
                           f"{MAX_PAYLOAD_JSON_VALUES} or one per 8 bytes of tokens.max_token_bytes, if more)")
    try:
        value = parse_strict_json(text)
    except ValueError as err:
        raise TokenInvalid(f"token {name} is not acceptable JSON") from err
    if not isinstance(value, dict):
        raise TokenInvalid(f"token {name} is not a JSON object")
    return value


def check_header(header: Mapping[str, Any], require_typ: bool) -> tuple[str, str | None]:
    alg = header.get("alg")
    # 'none' in any casing is not in SUPPORTED_ALGORITHMS, so it fails here like every unknown alg.
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise TokenInvalid("token algorithm is missing or not supported")
    forbidden = _FORBIDDEN_HEADERS & header.keys()
    if forbidden:
        raise TokenInvalid(f"token header carries a refused parameter: {', '.join(sorted(forbidden))}")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
        raise TokenInvalid("token key id (kid) must be a non-empty string of at most 256 characters")
    typ = header.get("typ")
    if "typ" in header and not isinstance(typ, str):
        raise TokenInvalid("token type (typ) must be a string")
    if require_typ and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES):
        raise TokenInvalid("token type (typ) must be at+jwt")
    return alg, kid
