"""Identity adapter: verifies bearer tokens (PyJWT, wrapped) against configured issuers and their key sets.

Public API: ``JwtVerifier`` (implements ``tenantgate.core.ports.TokenVerifier``), ``build_verifier``
(from ``Settings``), ``DevIssuer`` (development signing key and minting), and the key-set types
``IssuerKeys``, ``JwksFile``, ``JwksUrl``, ``KeySet``, ``KeySource``.
"""

from tenantgate.identity.devissuer import DevIssuer
from tenantgate.identity.jwks import IssuerKeys, JwksFile, JwksUrl, KeySource
from tenantgate.identity.keys import KeySet
from tenantgate.identity.verifier import JwtVerifier, build_verifier

__all__ = [
    "DevIssuer",
    "IssuerKeys",
    "JwksFile",
    "JwksUrl",
    "JwtVerifier",
    "KeySet",
    "KeySource",
    "build_verifier",
]
