"""A policy file cannot use an id that reads as the built-in guardrail's (review finding: `@id("TENANTGATE::
tenant-guardrail")` and fullwidth colons were accepted, and decisions and audit records then named a policy
that read as the guardrail)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tenantgate.core import policy_ids
from tenantgate.core.compiler import GUARDRAIL_ID, PolicySource, compile_policies
from tenantgate.core.policy_ids import folded, is_reserved_id
from tenantgate.errors import PolicyError

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
SCHEMA = PolicySource("schema.cedarschema", (BUNDLED / "schema.cedarschema").read_text())
RESERVED = ("policy ids starting with 'tenantgate::' are reserved (compared ignoring case, invisible characters "
            "and look-alike letters); rename it")

LOOK_ALIKES = {
    "upper case": "TENANTGATE::tenant-guardrail",
    "title case": "Tenantgate::tenant-guardrail",
    "fullwidth colons": "tenantgate\uff1a\uff1atenant-guardrail",
    "fullwidth letters": "\uff54\uff45\uff4e\uff41\uff4e\uff54\uff47\uff41\uff54\uff45::tenant-guardrail",
    "small colons": "tenantgate\ufe55\ufe55tenant-guardrail",
    "mathematical bold": "\U0001d42d\U0001d41e\U0001d427\U0001d41a\U0001d427\U0001d42d\U0001d420\U0001d41a"
                         "\U0001d42d\U0001d41e::tenant-guardrail",
    "zero-width space": "tenant\u200bgate::tenant-guardrail",
    "zero-width joiner before the colons": "tenantgate\u200d::tenant-guardrail",
    "soft hyphen": "tenant\u00adgate::tenant-guardrail",
    "word joiner and BOM": "\ufefftenantgate\u2060::tenant-guardrail",
    "combining grapheme joiner": "tenantgate\u034f::tenant-guardrail",
    "variation selector": "tenantgate\ufe0f::tenant-guardrail",
    "Cyrillic e and a": "t\u0435n\u0430ntg\u0430t\u0435::tenant-guardrail",
    "Cyrillic capitals": "\u0422\u0415NANTGATE::tenant-guardrail",
    "Greek alpha and tau": "ten\u03b1n\u03c4gate::tenant-guardrail",
    "ratio colons": "tenantgate\u2236\u2236tenant-guardrail",
    "modifier letter colons": "tenantgate\ua789\ua789tenant-guardrail",
    "Ethiopic wordspaces (review finding)": "tenantgate\u1361\u1361tenant-guardrail",
    "Mongolian colons (review finding)": "tenantgate\u1804\u1804tenant-guardrail",
    "Latin script g": "tenant\u0261ate::tenant-guardrail",
    "leading spaces": " \u00a0\u3000tenantgate::tenant-guardrail",
}


def _as_cedar_string(policy_id: str) -> str:
    return policy_id.replace("\\", "\\\\").replace('"', '\\"')


@pytest.mark.parametrize("name", sorted(LOOK_ALIKES))
def test_a_tenant_policy_cannot_take_an_id_that_reads_as_the_guardrails(name):
    text = f'@id("{_as_cedar_string(LOOK_ALIKES[name])}")\nforbid(principal, action, resource);\n'
    with pytest.raises(PolicyError) as caught:
        compile_policies(SCHEMA, [PolicySource("g.cedar", "permit(principal, action, resource);")],
                         {"acme": [PolicySource("tenants/acme/spoof.cedar", text)]})
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.path, diagnostic.line, diagnostic.message) == ("tenants/acme/spoof.cedar", 1, RESERVED)


@pytest.mark.parametrize("name", ["upper case", "fullwidth colons", "zero-width space", "Cyrillic e and a"])
def test_a_global_policy_cannot_take_one_either(name):
    text = f'@id("{_as_cedar_string(LOOK_ALIKES[name])}")\npermit(principal, action, resource);\n'
    with pytest.raises(PolicyError, match=re.escape(RESERVED)):
        compile_policies(SCHEMA, [PolicySource("spoof.cedar", text)])


def test_cedar_escapes_in_the_id_are_resolved_before_the_comparison():
    text = '@id("\\u{54}ENANTGATE\\u{FF1A}\\u{FF1A}tenant-guardrail")\npermit(principal, action, resource);\n'
    with pytest.raises(PolicyError, match=re.escape(RESERVED)):
        compile_policies(SCHEMA, [PolicySource("spoof.cedar", text)])


@pytest.mark.parametrize("policy_id", ["tenantgate-rules", "tenantgate:x", "acme::tenantgate::x", "my-tenantgate::x",
                                       "tenant gate::x", "Mandanten-Regel", "правило", "règle::facturation"])
def test_ids_that_do_not_read_as_reserved_ones_are_accepted(policy_id):
    assert not is_reserved_id(policy_id)
    text = f'@id("{policy_id}")\npermit(principal, action, resource);\n'
    compile_policies(SCHEMA, [PolicySource("ok.cedar", text)])


def test_the_guardrail_id_itself_and_every_look_alike_fold_to_the_same_text():
    assert folded(GUARDRAIL_ID) == GUARDRAIL_ID
    assert {folded(policy_id).lstrip() for policy_id in LOOK_ALIKES.values()} == {GUARDRAIL_ID}


def test_folding_an_ascii_id_is_lowercasing_it():
    # folded() takes a fast path for ASCII ids (a reload folds every tenant policy's id): it must agree with the
    # Unicode path, which no ASCII character changes but by case.
    for code in range(128):
        ch = chr(code)
        assert folded(ch) == ch.lower()
        visible = "".join(c for c in ch if not policy_ids._invisible(c))
        slow = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
        assert slow.translate(policy_ids._TO_PROTOTYPE) == ch.lower()
