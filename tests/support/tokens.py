"""Asserting on hostile tokens: ``rejects(verifier, token, error)``, and ``seg`` to build a segment by hand."""

import pytest

from tenantgate.errors import TokenError, TokenInvalid
from tenantgate.identity import JwtVerifier
from tenantgate.identity.encoding import b64url_encode


def rejects(verifier: JwtVerifier, token: str, error: type[TokenError] = TokenInvalid) -> None:
    with pytest.raises(error):
        verifier.verify(token)


def seg(data: bytes) -> str:
    return b64url_encode(data)
