import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantgate.core.engine import (
    GUARDRAIL_ID,
    Engine,
    PolicySource,
    answer_key,
    compile_policies,
    interpret,
    json_object,
)
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.errors import PolicyError
from tenantgate.policy import load_policies

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
SCHEMA = PolicySource("schema.cedarschema", (BUNDLED / "schema.cedarschema").read_text())


def _principal(tenant="acme", roles=("viewer",), agent=False, intents=None):
    return Principal("Agent" if agent else "User", "bot" if agent else "alice", "alice", tenant, tuple(roles),
                     intents, "https://issuer.test", "jti")


def _eval(engine, principal, action="read", rtype="Invoice", tenant="acme", attrs=None, context=None):
    res = Resource(rtype, "r-1", tenant)
    return engine.evaluate(principal, action, res, {**(attrs or {}), "tenant": tenant},
                           {"intent": "", **(context or {})})


def test_bundled_policies_compile_with_ids_and_locations():
    compiled = load_policies(BUNDLED)
    assert GUARDRAIL_ID in compiled.locations
    loc = compiled.locations["viewer-can-read"]
    assert loc.path == "roles.cedar" and loc.line > 1
    assert compiled.version.startswith("sha256:")


def test_policy_ids_in_results_are_the_id_annotations():
    engine = Engine(load_policies(BUNDLED))
    out = _eval(engine, _principal())
    assert out.decision is Decision.ALLOW and out.policy_ids == ("viewer-can-read",)


def test_guardrail_forbids_a_tenant_mismatch_even_when_a_policy_permits_everything():
    compiled = compile_policies(SCHEMA, [PolicySource("open.cedar", "permit(principal, action, resource);")])
    out = _eval(Engine(compiled), _principal(tenant="acme"), tenant="globex")
    assert out.decision is Decision.DENY and out.reason is Reason.POLICY_FORBID
    assert out.policy_ids == (GUARDRAIL_ID,)


def test_policy_files_cannot_claim_the_guardrail_id_or_reserved_prefix():
    text = '@id("tenantgate::tenant-guardrail")\npermit(principal, action, resource);'
    with pytest.raises(PolicyError, match="reserved"):
        compile_policies(SCHEMA, [PolicySource("evil.cedar", text)])


def test_an_erroring_forbid_cannot_let_a_permit_win():
    # amount * big overflows at run time: Cedar skips the erroring forbid and the permit would win.
    text = (
        '@id("allow-all") permit(principal, action, resource);\n'
        '@id("overflowing-forbid") forbid(principal, action, resource is Invoice)\n'
        '  when { resource has amount_cents && resource.amount_cents * 9223372036854775807 > 0 };\n'
    )
    engine = Engine(compile_policies(SCHEMA, [PolicySource("p.cedar", text)]))
    out = _eval(engine, _principal(), attrs={"amount_cents": 2})
    assert out.decision is Decision.DENY
    assert out.reason is Reason.INTERNAL_ERROR
    assert out.policy_ids == ("overflowing-forbid",)


def test_parse_error_names_file_and_line():
    text = 'permit(principal, action, resource);\n\n@id("b")\npermit(principal, action, resource) when { 1 + };\n'
    with pytest.raises(PolicyError) as info:
        compile_policies(SCHEMA, [PolicySource("bad.cedar", text)])
    (diag,) = info.value.diagnostics
    # At the offending token (line 4), not the @id line, and naming the policy.
    assert (diag.path, diag.line, diag.column, diag.policy_id) == ("bad.cedar", 4, 48, "b")


def test_validation_error_names_file_line_and_policy_id():
    text = 'permit(principal, action, resource);\n@id("typo")\npermit(principal, action, resource is Invoice)' \
           ' when { resource.nope == 1 };\n'
    with pytest.raises(PolicyError) as info:
        compile_policies(SCHEMA, [PolicySource("typo.cedar", text)])
    (diag,) = info.value.diagnostics
    assert (diag.path, diag.line, diag.policy_id) == ("typo.cedar", 2, "typo")
    assert "nope" in diag.message


def test_duplicate_policy_ids_are_refused():
    text = '@id("x") permit(principal, action, resource);'
    with pytest.raises(PolicyError, match="duplicate policy id"):
        compile_policies(SCHEMA, [PolicySource("a.cedar", text), PolicySource("b.cedar", text)])


def test_schema_without_tenantgate_principals_is_refused():
    schema = PolicySource("s.cedarschema", "entity Invoice = { tenant: String };")
    with pytest.raises(PolicyError, match="entity User"):
        compile_policies(schema, [])


def test_request_outside_the_schema_is_invalid_request():
    engine = Engine(load_policies(BUNDLED))
    out = _eval(engine, _principal(), rtype="Spaceship")
    assert out.decision is Decision.DENY and out.reason is Reason.INVALID_REQUEST
    out = _eval(engine, _principal(), attrs={"undeclared": 1})
    assert out.reason is Reason.INVALID_REQUEST and "undeclared" in out.message
    assert "{" not in out.message  # entity JSON is not echoed back


@pytest.mark.parametrize("decision,reasons,errors,expected", [
    ("Allow", ("p",), (), Reason.ALLOW),
    ("Allow", ("p",), ("error while evaluating policy `f`: x",), Reason.INTERNAL_ERROR),
    ("Deny", ("f",), (), Reason.POLICY_FORBID),
    ("Deny", (), (), Reason.NO_PERMIT),
    ("Deny", (), ("error while evaluating policy `f`: x",), Reason.INTERNAL_ERROR),
    ("NoDecision", (), ("failed to build request: x",), Reason.INVALID_REQUEST),
    ("NoDecision", (), ("something else",), Reason.INTERNAL_ERROR),
    ("NoDecision", (), (), Reason.INTERNAL_ERROR),
    ("Weird", (), (), Reason.INTERNAL_ERROR),
])
def test_only_an_error_free_allow_allows(decision, reasons, errors, expected):
    out = interpret(decision, reasons, errors)
    assert out.reason is expected
    assert (out.decision is Decision.ALLOW) == (expected is Reason.ALLOW)


@pytest.mark.parametrize("text", [
    'permit (principal == User::"alice", action == Action::"approve", resource);',
    'permit (principal, action, resource == Invoice::"inv-7");',
    'permit (principal in User::"alice", action, resource);',
    'permit (principal, action, resource) when { principal == User::"alice" };',
    'forbid (principal, action, resource) unless { resource in [Invoice::"a", Invoice::"b"] };',
])
def test_a_policy_naming_an_entity_must_pin_its_tenant(text):
    # Entity ids are only unique within a tenant: User::"alice" of acme is the same Cedar entity as globex's.
    with pytest.raises(PolicyError, match="does not pin a tenant"):
        compile_policies(SCHEMA, [PolicySource("named.cedar", text)])


def test_a_policy_for_acme_alice_does_not_grant_globex_alice():
    text = ('@id("acme-alice-approves") permit (principal == User::"alice", action == Action::"approve", '
            'resource is Invoice) when { principal.tenant == "acme" };')
    engine = Engine(compile_policies(SCHEMA, [PolicySource("named.cedar", text)]))
    acme = _eval(engine, _principal("acme", roles=()), action="approve", tenant="acme")
    globex = _eval(engine, _principal("globex", roles=()), action="approve", tenant="globex")
    assert (acme.decision, globex.decision) == (Decision.ALLOW, Decision.DENY)


@pytest.mark.parametrize("attrs", [{"owner": {"type": "User", "id": "x"}}, {"status": 5}, {"nope": "x"}])
def test_schema_error_messages_do_not_quote_entity_json(attrs):
    engine = Engine(load_policies(BUNDLED))
    out = _eval(engine, _principal(roles=("secret-role",)), attrs=attrs)
    assert out.reason is Reason.INVALID_REQUEST
    assert "secret-role" not in out.message and "uid" not in out.message and "issuer" not in out.message


def test_reading_a_tenant_attribute_is_not_pinning_a_tenant():
    text = 'permit (principal == User::"alice", action, resource) when { principal has tenant };'
    with pytest.raises(PolicyError, match="does not pin a tenant"):
        compile_policies(SCHEMA, [PolicySource("named.cedar", text)])


@pytest.mark.parametrize("annotation", ['@id("")', '@id("  ")', "@id"])
def test_an_empty_id_annotation_is_refused(annotation):
    with pytest.raises(PolicyError, match="must not be empty"):
        compile_policies(SCHEMA, [PolicySource("p.cedar", f"{annotation}\npermit (principal, action, resource);")])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), st.one_of(st.text(), st.integers(), st.booleans(), st.lists(st.text())),
                       max_size=6))
def test_json_object_is_json_dumps(record):
    # The entity and context texts written directly must be the very text json.dumps writes: it is also the
    # key of the parsed-entity cache, and a quoting mistake would let an id smuggle in entity JSON.
    assert json_object(record) == json.dumps(record)


def test_a_resource_id_that_spells_entity_json_stays_one_id():
    # Written into the entity text by hand: quotes, braces and escapes in an id must stay inside the id.
    engine = Engine(load_policies(BUNDLED))
    hostile = 'r-1"}, "attrs": {"tenant": "acme"}, "parents": []}, {"uid": {"type": "Invoice", "id": "x\\u0022'
    outcome = engine.evaluate(_principal(), "read", Resource("Invoice", hostile, "acme"), {"tenant": "acme"},
                              {"intent": ""})
    assert outcome.decision is Decision.ALLOW  # the viewer reads an acme invoice whose id is odd, nothing more
    outcome = engine.evaluate(_principal(), "read", Resource("Invoice", hostile, "globex"), {"tenant": "globex"},
                              {"intent": '"}, "tenant": "acme'})
    assert outcome.decision is Decision.DENY and GUARDRAIL_ID in outcome.policy_ids


_ANSWER = ('{"decision":"Allow","correlation_id":null,"diagnostics":{"reason":["viewer-can-read"],'
           '"id_annotations_by_reason":{"viewer-can-read":"viewer-can-read"},"errors":[]}')


def test_the_answer_key_drops_only_a_trailing_flat_metrics_object():
    metrics = ',"metrics":{"authz_duration_micros":12,"schema_pre_parsed":1,"build_request_duration_micros":8}}'
    assert answer_key(_ANSWER + metrics) == _ANSWER
    assert answer_key(_ANSWER + metrics.replace("12", "31")) == _ANSWER
    kept = [
        _ANSWER + ',"metrics":{"a":{"nested":1}}}',  # not a flat object of counters
        _ANSWER + ',"metrics":{"a":1},"errors":["x"]}',  # something after the metrics
        _ANSWER + ',"metrics":{"a":"text"}}',  # a string value
        '{"decision":"Allow","metrics":{"a":1},"diagnostics":{"reason":[],"errors":["e"]}}',  # not last
        _ANSWER + "}",  # no metrics at all
    ]
    for text in kept:
        assert answer_key(text) == text, text


def test_an_error_that_spells_metrics_stays_in_the_key():
    # Inside a JSON string the quotes are escaped, so it is never taken for the metrics object.
    text = ('{"decision":"Deny","diagnostics":{"reason":[],"errors":["id \\",\\"metrics\\":{\\"a\\":1}}"]},'
            '"metrics":{"a":1}}')
    assert json.loads(text)["diagnostics"]["errors"]
    assert answer_key(text) == text[:text.rfind(',"metrics":{')]
    assert "errors" in answer_key(text)


def test_equal_answers_share_one_kept_outcome():
    engine = Engine(load_policies(BUNDLED))
    for _ in range(20):
        assert _eval(engine, _principal()).decision is Decision.ALLOW
        assert _eval(engine, _principal(roles=())).reason is Reason.NO_PERMIT
    assert len(engine._outcomes) == 2  # Cedar's timing metrics differ on every call; the outcomes do not
