"""JwtVerifier under hostile sizes: what a verified token keeps, the cache's byte bound, and the work a forged
token can cause before its signature is checked. Memory is measured (tracemalloc, the cache's own byte
accounting) and work is counted (what reaches the JSON parser): no timing."""

from __future__ import annotations

import base64
import dataclasses
import gc
import hashlib
import json
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
import pytest

from support.issuers import FixedClock, TestIssuer, token_settings
from tenantgate.audit import JsonlAuditSink
from tenantgate.core.model import CheckInput, ClaimNames, DecisionResult, Resource, VerifiedClaims
from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.tenancy import check_token_binding, principal_from_claims
from tenantgate.errors import IssuerUntrusted, TokenExpired, TokenInvalid
from tenantgate.identity import JwtVerifier
from tenantgate.identity import tokenshape as tokenshape_module
from tenantgate.identity.tokenshape import MAX_HEADER_JSON_VALUES, MAX_PAYLOAD_JSON_VALUES
from tenantgate.policy import PolicyStore, load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
CERT_SHA256 = hashlib.sha256(b"a certificate").hexdigest()
THUMBPRINT = base64.urlsafe_b64encode(hashlib.sha256(b"a certificate").digest()).rstrip(b"=").decode()
# Under MAX_PAYLOAD_JSON_VALUES together with the default claims: the reviewer's 3,900 would be refused unparsed.
UNREAD_BULK = [{}] * 480


DEFAULT_NAMES = ClaimNames()


def verifier_of(es: TestIssuer, clock: FixedClock, *, cache_max_bytes: int | None = None,
                names: ClaimNames = DEFAULT_NAMES, **tokens: Any) -> JwtVerifier:
    settings = token_settings(tenant_claim=names.tenant, roles_claim=names.roles, intents_claim=names.intents,
                              **tokens)
    if cache_max_bytes is None:
        return JwtVerifier([es.issuer_keys()], settings, clock)
    return JwtVerifier([es.issuer_keys()], settings, clock, cache_max_bytes=cache_max_bytes)


def retained_bytes(action: Callable[[], object]) -> int:
    """Bytes still allocated after ``action`` returns (its result dropped), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def count_of_parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts handed to the strict JSON parser from now on (the parser still runs)."""
    seen: list[str] = []
    real = tokenshape_module.parse_strict_json

    def recording(text: str, **kwargs: Any) -> Any:
        seen.append(text)
        return real(text, **kwargs)

    monkeypatch.setattr(tokenshape_module, "parse_strict_json", recording)
    return seen


def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


# ------------------------------------------------------------------------------ what a verified token keeps


def test_verified_token_keeps_only_the_claims_decisions_read(es: TestIssuer, clock: FixedClock) -> None:
    token = es.mint(roles=["viewer"], intents="read summarize", x=UNREAD_BULK, department="finance",
                    act={"sub": "agent-7", "act": {"sub": "earlier-agent"}, "client_id": "c1"},
                    cnf={"x5t#S256": THUMBPRINT, "jkt": "another-method"})
    claims = verifier_of(es, clock).verify(token)
    assert isinstance(claims.claims, MappingProxyType)
    assert dict(claims.claims) == {"tenant": "acme", "roles": ["viewer"], "intents": "read summarize",
                                   "act": {"sub": "agent-7"}, "cnf": {"x5t#S256": THUMBPRINT}}


def test_verified_token_keeps_the_configured_claim_names(es: TestIssuer, clock: FixedClock) -> None:
    names = ClaimNames(tenant="org", roles="groups", intents="purposes")
    token = es.mint(org="globex", groups=["viewer"], purposes=["read"], roles=["admin"])
    claims = verifier_of(es, clock, names=names).verify(token)
    assert dict(claims.claims) == {"org": "globex", "groups": ["viewer"], "purposes": ["read"]}


def test_memory_kept_per_cached_token_does_not_grow_with_claims_nobody_reads(es: TestIssuer,
                                                                            clock: FixedClock) -> None:
    # Review finding: 16 KiB tokens with an unread claim of 3,900 empty objects held ~280 KiB each in the cache.
    verifier = verifier_of(es, clock)
    verifier.verify(es.mint())  # keys loaded, first-use allocations done
    plain = [es.mint(sub=f"user-{i}") for i in range(50)]
    bulky = [es.mint(sub=f"bulky-{i}", x=UNREAD_BULK) for i in range(50)]
    plain_each = retained_bytes(lambda: [verifier.verify(token) for token in plain]) / len(plain)
    bulky_each = retained_bytes(lambda: [verifier.verify(token) for token in bulky]) / len(bulky)
    assert verifier.cache_entries == 101
    assert bulky_each < 4096  # ~37 KiB each before the fix, ~1 KiB after
    assert bulky_each < plain_each + 1024


# ------------------------------------------------------------------------------ the cache's byte bound


def many_roles(tag: str) -> list[str]:
    return [f"{tag}-role-{n:03}" for n in range(250)]  # valid: under the core's 256 roles of 256 characters


def test_cache_stays_within_its_byte_limit_even_for_large_read_claims(
    es: TestIssuer, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 256 * 1024
    verifier = verifier_of(es, clock, cache_max_bytes=limit)
    verifier.verify(es.mint())
    tokens = [es.mint(sub=f"user-{i}", roles=many_roles(str(i))) for i in range(40)]  # ~20 KiB kept each
    held_before = verifier.cache_bytes
    retained = retained_bytes(lambda: [verifier.verify(token) for token in tokens])
    assert verifier.cache_bytes <= limit
    assert retained <= limit - held_before + 16 * 1024  # measured, not only accounted (+ slack for the map)
    assert 5 < verifier.cache_entries < len(tokens)  # the least recently used were evicted
    calls = decode_calls(monkeypatch)
    verifier.verify(tokens[-1])
    assert calls == []  # the most recent is still cached
    verifier.verify(tokens[0])
    assert calls == [1]  # the oldest was evicted, and verifies afresh


def test_cache_accounting_does_not_undercount_what_entries_hold(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_of(es, clock)
    verifier.verify(es.mint())
    held_before = verifier.cache_bytes
    tokens = [es.mint(sub=f"user-{i}", roles=many_roles(str(i))) for i in range(20)]
    retained = retained_bytes(lambda: [verifier.verify(token) for token in tokens])
    assert retained <= (verifier.cache_bytes - held_before) * 1.1


def test_token_larger_than_the_whole_cache_is_verified_but_not_cached(
    es: TestIssuer, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = verifier_of(es, clock, cache_max_bytes=8 * 1024)
    token = es.mint(roles=many_roles("big"))
    calls = decode_calls(monkeypatch)
    assert verifier.verify(token).subject == verifier.verify(token).subject == "alice"
    assert calls == [1, 1]
    assert (verifier.cache_entries, verifier.cache_bytes) == (0, 0)
    verifier.verify(small := es.mint())
    verifier.verify(small)
    assert calls == [1, 1, 1] and verifier.cache_entries == 1


def test_expired_entry_gives_its_bytes_back(es: TestIssuer, clock: FixedClock) -> None:
    verifier = verifier_of(es, clock)
    token = es.mint(roles=many_roles("x"))
    verifier.verify(token)
    assert verifier.cache_bytes > 10_000
    clock.advance(300 + 30)
    with pytest.raises(TokenExpired):
        verifier.verify(token)
    assert (verifier.cache_entries, verifier.cache_bytes) == (0, 0)


# ------------------------------------------------------------------------------ decisions are unchanged


CUSTOM = ClaimNames(tenant="org", roles="groups", intents="purposes")
CASES: dict[str, tuple[ClaimNames, dict[str, Any], str]] = {
    "viewer": (ClaimNames(), {"roles": ["viewer"]}, ""),
    "no roles": (ClaimNames(), {}, ""),
    "empty roles": (ClaimNames(), {"roles": []}, ""),
    "ill-typed roles": (ClaimNames(), {"roles": [1]}, ""),
    "no tenant": (ClaimNames(), {"tenant": None, "roles": ["viewer"]}, ""),
    "intents as a string": (ClaimNames(), {"roles": ["viewer"], "intents": "read summarize"}, ""),
    "intents not bound": (ClaimNames(), {"roles": ["viewer"], "intents": ["summarize"]}, ""),
    "agent with prior actors": (ClaimNames(), {"roles": ["viewer"], "intents": ["read"],
                                               "act": {"sub": "agent-7", "act": {"sub": "a0"}, "x": [1]}}, ""),
    "agent without intents": (ClaimNames(), {"roles": ["viewer"], "act": {"sub": "agent-7"}}, ""),
    "act not an object": (ClaimNames(), {"roles": ["viewer"], "act": ["agent-7"]}, ""),
    "act without sub": (ClaimNames(), {"roles": ["viewer"], "act": {"client_id": "agent-7"}}, ""),
    "bound, with its certificate": (ClaimNames(), {"roles": ["viewer"],
                                                   "cnf": {"x5t#S256": THUMBPRINT, "jkt": "k"}}, CERT_SHA256),
    "bound, without a certificate": (ClaimNames(), {"roles": ["viewer"], "cnf": {"x5t#S256": THUMBPRINT}}, ""),
    "cnf not an object": (ClaimNames(), {"roles": ["viewer"], "cnf": THUMBPRINT}, CERT_SHA256),
    "cnf by another method": (ClaimNames(), {"roles": ["viewer"], "cnf": {"jkt": "k"}}, CERT_SHA256),
    "unread bulk": (ClaimNames(), {"roles": ["viewer"], "x": UNREAD_BULK}, ""),
    "custom names": (CUSTOM, {"org": "acme", "groups": ["viewer"], "purposes": ["read"], "roles": ["nothing"]}, ""),
    "custom names, decoys only": (CUSTOM, {"tenant": "acme", "roles": ["viewer"]}, ""),
    "roles claim named act": (ClaimNames(roles="act"), {"act": {"sub": "agent-7"}}, ""),
}


def comparable(result: DecisionResult) -> tuple[Any, ...]:
    audit = dataclasses.replace(result.audit, decision_id="", time="")
    return result.decision, result.reason, result.message, result.policy_ids, audit


@pytest.fixture
def decide(tmp_path: Path, es: TestIssuer, clock: FixedClock) -> Callable[..., Any]:
    engine = PolicyStore(load_policies(BUNDLED)).current

    def deciding(names: ClaimNames, cache_size: int) -> tuple[DecisionPoint, JwtVerifier]:
        verifier = verifier_of(es, clock, names=names, cache_size=cache_size)
        sink = JsonlAuditSink(tmp_path / f"audit-{cache_size}.jsonl")
        return DecisionPoint(verifier=verifier, engine=engine, audit=sink, clock=clock, claim_names=names), verifier

    return deciding


@pytest.mark.parametrize("case", list(CASES))
def test_decision_from_a_cache_hit_equals_a_fresh_one_and_one_over_every_claim(
    es: TestIssuer, decide: Callable[..., Any], case: str
) -> None:
    names, claims, cert = CASES[case]
    token = es.mint(claims)
    check = CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme"), intent="read",
                       client_cert_sha256=cert, api="ext_authz")
    cached_pdp, cached_verifier = decide(names, 100)
    fresh_pdp, _ = decide(names, 0)
    first, hit, fresh = cached_pdp.decide(check), cached_pdp.decide(check), fresh_pdp.decide(check)
    assert cached_verifier.cache_entries == 1
    assert comparable(first) == comparable(hit) == comparable(fresh)
    # And the kept claims decide as the whole payload would have.
    verified = cached_verifier.verify(token)
    whole = VerifiedClaims(verified.issuer, verified.subject,
                           MappingProxyType(jwt.decode(token, options={"verify_signature": False})),
                           verified.token_id, verified.expires_at)
    assert principal_from_claims(verified, names) == principal_from_claims(whole, names)
    assert check_token_binding(verified.claims, cert) == check_token_binding(whole.claims, cert)


# ------------------------------------------------------------------------------ work before the signature


def forged(es: TestIssuer, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A token with ``es``'s issuer, kid and claims, and a signature that is not one."""
    head = header if header is not None else es.default_header()
    return es.raw(head, {**es.default_claims(), **claims}, b"\x00" * 64)


@pytest.mark.parametrize("bulk", [[{}] * 3900, [[]] * 3900, [0] * 5900, {f"{n:x}": [0] for n in range(1100)}],
                         ids=["objects", "arrays", "numbers", "members"])
def test_forged_payload_with_too_many_json_values_never_reaches_the_parser(
    es: TestIssuer, clock: FixedClock, monkeypatch: pytest.MonkeyPatch, bulk: Any
) -> None:
    # Review finding: parsing such a 16 KiB payload, before any signature check, cost 5-8 ms of event loop.
    token = forged(es, x=bulk)
    assert len(token) <= token_settings().max_token_bytes
    verifier = verifier_of(es, clock)
    parsed = count_of_parsed(monkeypatch)
    with pytest.raises(TokenInvalid, match="token payload is too complex"):
        verifier.verify(token)
    assert len(parsed) == 1 and '"alg"' in parsed[0]  # the header only


def test_forged_header_with_too_many_json_values_never_reaches_the_parser(
    es: TestIssuer, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = forged(es, header={**es.default_header(), "x": [{}] * 3000})
    verifier = verifier_of(es, clock)
    parsed = count_of_parsed(monkeypatch)
    with pytest.raises(TokenInvalid, match="token header is too complex"):
        verifier.verify(token)
    assert parsed == []


@pytest.mark.parametrize("segment", ["header", "payload"])
def test_a_string_that_never_closes_is_scanned_once_not_again_from_every_quote_in_it(
    es: TestIssuer, clock: FixedClock, segment: str
) -> None:
    # Review finding: `"\\"\\"\\"...` never closes; the value count's string pattern failed to the end from each
    # of its quotes in turn (quadratic: 0.43 s of the event loop for a 16 KB forged token, before any signature
    # check). Now one match takes the unterminated rest, so the pattern is tried once, not once per quote.
    bomb = '"' + '\\"' * 6000
    match = tokenshape_module._JSON_STRING.match(bomb)
    assert match is not None and match.end() == len(bomb)
    for tail in ('"a\\', '"a\\\n\\"', '"\\u00e9'):
        assert tokenshape_module._JSON_STRING.fullmatch(tail)
    text = base64.urlsafe_b64encode(bomb.encode()).rstrip(b"=").decode()
    head, payload, _signature = forged(es).split(".")
    token = ".".join([text, payload, "AAAA"] if segment == "header" else [head, text, "AAAA"])
    assert len(token) <= token_settings().max_token_bytes
    with pytest.raises(TokenInvalid, match=f"token {segment} is not acceptable JSON"):
        verifier_of(es, clock).verify(token)


def structural_count(claims: dict[str, Any]) -> int:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", json.dumps(claims, separators=(",", ":")))
    return text.count(",") + text.count("{") + text.count("[")


def test_a_larger_max_token_bytes_allows_more_payload_values(es: TestIssuer, clock: FixedClock) -> None:
    # Review finding: raising tokens.max_token_bytes for an identity provider's large tokens did not help,
    # the value count stayed fixed.
    claims = {**es.default_claims(), "permissions": [0] * 2500}
    with pytest.raises(TokenInvalid, match=r"tokens\.max_token_bytes"):
        verifier_of(es, clock).verify(es.mint(claims))
    assert verifier_of(es, clock, max_token_bytes=65536).verify(es.mint(claims)).subject


def test_what_strings_hold_and_a_thousand_groups_do_not_count_against_the_value_limit(es: TestIssuer,
                                                                                     clock: FixedClock) -> None:
    # Review finding: 1,024 characters counted inside strings too, so a signed token with a 1,030-entry `groups`
    # claim, or one string claim holding 1,100 commas, was refused.
    verifier = verifier_of(es, clock)
    assert verifier.verify(es.mint({**es.default_claims(), "groups": [f"g{n}" for n in range(1030)]})).subject
    assert verifier.verify(es.mint({**es.default_claims(), "note": "," * 1100 + "{[" * 500})).subject


def test_payload_at_the_value_limit_is_verified_and_one_more_is_refused(es: TestIssuer,
                                                                        clock: FixedClock) -> None:
    base = {**es.default_claims(), "roles": many_roles("r"), "intents": many_roles("i"), "pad": [0]}
    pad = [0] * (1 + MAX_PAYLOAD_JSON_VALUES - structural_count(base))
    at_limit = {**base, "pad": pad}
    assert structural_count(at_limit) == MAX_PAYLOAD_JSON_VALUES
    verifier = verifier_of(es, clock)
    assert verifier.verify(es.mint(at_limit)).subject == "alice"
    with pytest.raises(TokenInvalid, match="too complex"):
        verifier.verify(es.mint({**base, "pad": [*pad, 0]}))


def test_header_at_the_value_limit_is_verified(es: TestIssuer, clock: FixedClock) -> None:
    header = {**es.default_header(), "pad": [0]}
    header["pad"] = [0] * (1 + MAX_HEADER_JSON_VALUES - structural_count(header))
    assert structural_count(header) == MAX_HEADER_JSON_VALUES
    assert verifier_of(es, clock).verify(es.signed_raw(header, es.default_claims())).subject == "alice"


def test_forged_payload_under_the_limit_keeps_its_usual_answer(es: TestIssuer, clock: FixedClock) -> None:
    with pytest.raises(TokenInvalid, match="token signature is invalid"):
        verifier_of(es, clock).verify(forged(es, x=[{}] * 100))
    untrusted = es.raw(es.default_header(), {**es.default_claims(), "iss": "https://elsewhere.test"}, b"\x00" * 64)
    with pytest.raises(IssuerUntrusted, match="token issuer is not trusted"):
        verifier_of(es, clock).verify(untrusted)

