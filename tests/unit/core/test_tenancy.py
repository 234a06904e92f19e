from types import MappingProxyType

import pytest

from tenantgate.core.model import ClaimNames, Denial, Principal, Reason, Resource, VerifiedClaims
from tenantgate.core.tenancy import check_intent, check_tenant, principal_from_claims


def _claims(**claims):
    base = {"iss": "https://issuer.test", "sub": "alice", "tenant": "acme"}
    base.update(claims)
    base = {k: v for k, v in base.items() if v is not ...}
    return VerifiedClaims("https://issuer.test", "alice", MappingProxyType(base), "jti-1", 2e9)


def test_principal_tenant_comes_from_the_tenant_claim():
    p = principal_from_claims(_claims(roles=["viewer"]), ClaimNames())
    assert isinstance(p, Principal)
    assert (p.entity_type, p.entity_id, p.tenant, p.roles, p.intents) == ("User", "alice", "acme", ("viewer",), None)


def test_configured_claim_names_are_used():
    p = principal_from_claims(_claims(org="globex", tenant=...), ClaimNames(tenant="org"))
    assert isinstance(p, Principal) and p.tenant == "globex"


@pytest.mark.parametrize("tenant", [..., "", 5, True, ["acme"], {"id": "acme"}, "acme\x00", "аcme", None])
def test_missing_or_ill_typed_tenant_claim_is_tenant_claim_missing(tenant):
    d = principal_from_claims(_claims(tenant=tenant), ClaimNames())
    assert isinstance(d, Denial) and d.reason is Reason.TENANT_CLAIM_MISSING


@pytest.mark.parametrize("roles", ["admin", [1], [""], {"a": 1}, True])
def test_ill_typed_roles_claim_is_token_invalid(roles):
    d = principal_from_claims(_claims(roles=roles), ClaimNames())
    assert isinstance(d, Denial) and d.reason is Reason.TOKEN_INVALID


@pytest.mark.parametrize(("claim", "value", "says"), [
    ("roles", [f"r{n}" for n in range(257)], "claim 'roles' holds 257 items; at most 256 are accepted"),
    ("roles", ["viewer", "x" * 257], "claim 'roles' holds an item longer than 256 characters"),
    ("intents", ["y" * 257], "claim 'intents' holds an item longer than 256 characters"),
    ("roles", ["viewer", ""], "claim 'roles' must be a list of non-empty strings"),
])
def test_a_roles_or_intents_claim_over_its_limits_is_denied_naming_the_limit(claim, value, says):
    # Review finding: 257 non-empty roles were denied "must be a list of non-empty strings".
    d = principal_from_claims(_claims(**{claim: value}), ClaimNames())
    assert isinstance(d, Denial) and d.reason is Reason.TOKEN_INVALID and d.message == says
    assert isinstance(principal_from_claims(_claims(**{claim: value[:256] if len(value) > 256 else ["ok"]}),
                                            ClaimNames()), Principal)


@pytest.mark.parametrize("roles,claimed,expected", [
    (..., False, ()), ([], True, ()), (None, True, ()), (["viewer"], True, ("viewer",)),
])
def test_the_principal_records_whether_the_token_carried_a_roles_claim(roles, claimed, expected):
    # Only a token without the claim may take roles from entity data; `roles: []` means "no roles".
    p = principal_from_claims(_claims(roles=roles), ClaimNames())
    assert isinstance(p, Principal) and (p.roles_claimed, p.roles) == (claimed, expected)


def test_a_renamed_roles_claim_is_the_one_that_counts():
    p = principal_from_claims(_claims(groups=[]), ClaimNames(roles="groups"))
    assert isinstance(p, Principal) and p.roles_claimed
    p = principal_from_claims(_claims(groups=..., roles=[]), ClaimNames(roles="groups"))
    assert isinstance(p, Principal) and not p.roles_claimed


def test_act_claim_makes_an_agent_acting_for_the_user():
    p = principal_from_claims(_claims(act={"sub": "billing-bot", "act": {"sub": "older"}}, intents=["a b"]),
                              ClaimNames())
    assert isinstance(p, Principal)
    assert (p.entity_type, p.entity_id, p.subject) == ("Agent", "billing-bot", "alice")


@pytest.mark.parametrize("act", ["bot", {"sub": ""}, {"sub": 5}, {}, []])
def test_malformed_act_claim_is_token_invalid(act):
    d = principal_from_claims(_claims(act=act), ClaimNames())
    assert isinstance(d, Denial) and d.reason is Reason.TOKEN_INVALID


def test_an_act_sub_too_long_is_token_invalid_naming_the_limit():
    # Review finding: a 2,000-character act.sub was refused as if it were empty or not a string.
    d = principal_from_claims(_claims(act={"sub": "b" * 1025}, intents=["x"]), ClaimNames())
    assert isinstance(d, Denial) and d.reason is Reason.TOKEN_INVALID
    assert "at most 1024 characters" in d.message
    p = principal_from_claims(_claims(act={"sub": "b" * 1024}, intents=["x"]), ClaimNames())
    assert isinstance(p, Principal) and p.entity_id == "b" * 1024


def test_space_separated_intents_claim_is_accepted():
    p = principal_from_claims(_claims(intents="billing.reconcile support.read"), ClaimNames())
    assert isinstance(p, Principal) and p.intents == ("billing.reconcile", "support.read")


def test_space_separated_intents_claim_allows_repeated_spaces():
    p = principal_from_claims(_claims(intents="  billing.reconcile   support.read "), ClaimNames())
    assert isinstance(p, Principal) and p.intents == ("billing.reconcile", "support.read")


@pytest.mark.parametrize("separator", ["\u3000", "\u00a0", "\u2028", "\u001c", "\u0085", "\t", "\n"])
def test_intents_string_with_other_whitespace_is_token_invalid_not_split(separator):
    # An issuer checking scopes the RFC 6749 way bound one intent here; reading two would bind one it never did.
    p = principal_from_claims(_claims(intents=f"summarize{separator}billing.reconcile"), ClaimNames())
    assert isinstance(p, Denial) and p.reason is Reason.TOKEN_INVALID and "U+0020" in p.message


def _principal(intents=None, agent=False):
    return Principal("Agent" if agent else "User", "bot" if agent else "alice", "alice", "acme", (), intents,
                     "iss", "jti")


def test_tenant_mismatch_is_cross_tenant():
    assert check_tenant(_principal(), Resource("Invoice", "i", "acme")) is None
    d = check_tenant(_principal(), Resource("Invoice", "i", "globex"))
    assert d is not None and d.reason is Reason.CROSS_TENANT


def test_intent_binding_both_ways():
    assert check_intent(_principal(), "") is None
    assert check_intent(_principal(), "anything") is None
    assert check_intent(_principal(("billing",)), "billing") is None
    assert check_intent(_principal(("billing",)), "").reason is Reason.INTENT_MISSING
    assert check_intent(_principal(("billing",)), "export").reason is Reason.INTENT_NOT_BOUND
    assert check_intent(_principal((), ), "billing").reason is Reason.INTENT_NOT_BOUND


def test_agent_tokens_must_bind_intents():
    assert check_intent(_principal(None, agent=True), "billing").reason is Reason.INTENT_NOT_BOUND
    assert check_intent(_principal(("billing",), agent=True), "billing") is None
