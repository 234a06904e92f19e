"""Principal roles from entity data: only for a token that carries no roles claim at all."""

import json
from types import MappingProxyType

import pytest

from tenantgate.core.entities import build_directory
from tenantgate.core.entity_files import read_entity_file
from tenantgate.core.model import ClaimNames, Principal, VerifiedClaims
from tenantgate.core.subjects import roles_from_entity_data
from tenantgate.core.tenancy import principal_from_claims

ACME = read_entity_file("tenants/acme/entities.json",
                        json.dumps([{"uid": {"type": "User", "id": "adam"}, "attrs": {"roles": ["admin"]}}]), "acme")
DIRECTORY, _ = build_directory(None, {"acme": ACME})
OMIT = object()


def _principal(roles_claim):
    claims = {"iss": "https://issuer.test", "sub": "adam", "tenant": "acme"}
    if roles_claim is not OMIT:
        claims["roles"] = roles_claim
    principal = principal_from_claims(VerifiedClaims("https://issuer.test", "adam", MappingProxyType(claims),
                                                     "jti", 2e9), ClaimNames())
    assert isinstance(principal, Principal)
    return principal


def test_a_token_without_a_roles_claim_takes_the_roles_of_its_record():
    assert roles_from_entity_data(_principal(OMIT), DIRECTORY.view("acme")).roles == ("admin",)


@pytest.mark.parametrize("claim", [[], None])
def test_a_token_issued_with_no_roles_stays_role_less(claim):
    # The identity provider said "no roles" (an empty list, or null): entity data must not widen that.
    assert roles_from_entity_data(_principal(claim), DIRECTORY.view("acme")).roles == ()


def test_token_roles_are_never_replaced_by_the_record():
    assert roles_from_entity_data(_principal(["viewer"]), DIRECTORY.view("acme")).roles == ("viewer",)


def test_a_principal_built_without_saying_is_treated_as_having_a_roles_claim():
    # Fail-safe default: only principal_from_claims, which sees the token, may open the fallback.
    built = Principal("User", "adam", "adam", "acme", (), None, "https://issuer.test", "jti")
    assert roles_from_entity_data(built, DIRECTORY.view("acme")).roles == ()
