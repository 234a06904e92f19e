"""The canonical encoding and hash of one chain record, and strict parsing of a line."""

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantgate.audit.chain import GENESIS_HASH, MalformedRecord, canonical, parse, seal


def test_the_hash_is_sha256_of_the_sorted_compact_ascii_json_without_the_hash():
    sealed = seal({"record_type": "decision", "b": "é\n", "a": [1, "x"]}, 1, GENESIS_HASH)
    body = '{"a":[1,"x"],"b":"\\u00e9\\n","prev_hash":"' + GENESIS_HASH + '","record_type":"decision","seq":1}'
    assert sealed.hash == hashlib.sha256(body.encode()).hexdigest()
    assert sealed.line == (body[:-1] + ',"hash":"' + sealed.hash + '"}\n').encode()
    assert GENESIS_HASH == "0" * 64


def test_a_sealed_line_parses_back_intact_with_hash_last():
    sealed = seal({"record_type": "decision", "decision_id": "d1"}, 7, "a" * 64)
    record = parse(sealed.line)
    assert record.intact and (record.seq, record.prev_hash, record.claimed_hash) == (7, "a" * 64, sealed.hash)
    assert list(json.loads(sealed.line)) [-1] == "hash"


def test_a_record_that_sets_a_chain_field_itself_is_refused():
    with pytest.raises(ValueError, match="prev_hash"):
        seal({"prev_hash": "x"}, 1, GENESIS_HASH)


def test_changed_content_no_longer_matches_its_hash():
    line = seal({"decision": "DENY"}, 1, GENESIS_HASH).line.replace(b"DENY", b"ALLO")
    record = parse(line)
    assert not record.intact and record.canonical


def test_semantically_equal_but_reencoded_line_is_not_canonical():
    line = seal({"a": "1", "b": "2"}, 1, GENESIS_HASH).line
    spaced = line.replace(b'"a":"1",', b'"a": "1", ')
    assert not parse(spaced).canonical
    reordered = json.dumps(json.loads(line), separators=(",", ":"), sort_keys=True).encode()  # hash not last
    assert not parse(reordered).canonical


@pytest.mark.parametrize("line", [
    b'{"a":1,"a":2,"seq":1,"prev_hash":"' + b"0" * 64 + b'","hash":"' + b"0" * 64 + b'"}',
    b"[1,2]",
    b"not json",
    '{"a":"é"}'.encode(),
    b'{"a":NaN,"seq":1,"prev_hash":"' + b"0" * 64 + b'","hash":"' + b"0" * 64 + b'"}',
    b'{"seq":true,"prev_hash":"' + b"0" * 64 + b'","hash":"' + b"0" * 64 + b'"}',
    b'{"seq":1,"prev_hash":"short","hash":"' + b"0" * 64 + b'"}',
    b'{"record_type":"decision"}',
])
def test_lines_that_are_not_chained_records_are_malformed(line):
    with pytest.raises(MalformedRecord):
        parse(line)


def test_canonical_refuses_nan():
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                       max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.text().filter(lambda k: k not in ("seq", "prev_hash", "hash")), _values,
                              max_size=6),
       seq=st.integers(min_value=1, max_value=2**53))
def test_any_json_record_round_trips_intact_on_one_ascii_line(fields, seq):
    sealed = seal(fields, seq, GENESIS_HASH)
    assert sealed.line.count(b"\n") == 1 and sealed.line.endswith(b"\n") and sealed.line.isascii()
    record = parse(sealed.line)
    assert record.intact and record.fields == {**fields, "seq": seq, "prev_hash": GENESIS_HASH}


def _reference(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


_flat = st.one_of(st.text(), st.booleans(), st.integers(), st.lists(st.text(), max_size=3),
                  st.tuples(st.text(), st.text()), st.none(), st.floats(allow_nan=False, allow_infinity=False),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.text(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.text(), _flat, max_size=8), again=st.dictionaries(st.text(), _flat, max_size=8))
def test_canonical_is_exactly_the_sorted_compact_ascii_json_text(record, again):
    # The fast path (per key set) and the encoder fallback must give the same text as json.dumps.
    assert canonical(record) == _reference(record)
    same_keys = {key: again.get(key, value) for key, value in record.items()}  # same key set, other values
    assert canonical(same_keys) == _reference(same_keys)


def test_a_known_key_set_with_an_unusual_value_falls_back_to_the_encoder():
    class Text(str):
        pass

    first = {"b": "x", "a": ["y"], "c": 1, "d": True}
    assert canonical(first) == _reference(first)
    for odd in (None, 1.5, Text("t"), {"k": "v"}, [1], ("p", "q"), "é\u2028\n\"", -(10**30)):
        changed = {**first, "a": odd}
        assert canonical(changed) == _reference(changed)
    with pytest.raises(TypeError, match="keys must be strings"):  # json would sort 1, 2 before stringifying
        canonical({1: "a", 2: "b"})
    with pytest.raises(ValueError):
        canonical({**first, "a": float("inf")})
    with pytest.raises(TypeError):
        canonical({**first, "a": object()})


def test_keys_that_only_look_like_a_planned_key_set_are_encoded_by_json_itself():
    class Key(str):
        def __lt__(self, other):
            return str.__gt__(self, other)

    class Alias:  # equal to "k1" and hashed like it, but not a string
        def __eq__(self, other):
            return other == "k1"

        def __hash__(self):
            return hash("k1")

    plain = {"k1": "v", "k0": 1}
    assert canonical(plain) == _reference(plain)  # the plan for ("k1", "k0") exists from here on
    odd = {Key("k1"): "v", Key("k0"): 1}
    assert canonical(odd) == _reference(odd)
    with pytest.raises(TypeError):
        canonical({Alias(): "v", "k0": 1})
    for other in (["a", "b"], "abc", ("k1", "k0"), 5, None):
        assert canonical(other) == _reference(other)  # type: ignore[arg-type]


def test_values_where_orjson_and_json_write_different_text_are_encoded_by_json():
    # The fast path (orjson) differs from json.dumps for these; each must come out exactly as json writes it.
    base = {"decision": "ALLOW", "policy_ids": ["p"], "seq": 1, "dry_run": False, "grant": None}
    for odd in ("del\x7f", "caf\u00e9", "\u2028", "\U0001f600", 1e-07, 1e16, 0.5, 2**64, -(2**63) - 1,
                2**63, ["a", 1.5], ["x", ["y"]], ("t", "u"), [], {"k": "v"}, ["\x7f"], "\x00\x1f\"\\/",
                "\ud800", ["\udfff"]):
        record = {**base, "resource_id": odd}
        assert canonical(record) == _reference(record), odd
    assert canonical({"caf\u00e9": 1, "cafe": 2}) == _reference({"caf\u00e9": 1, "cafe": 2})
    assert canonical({"\x7f": 1}) == _reference({"\x7f": 1})


@pytest.mark.parametrize("fields", [
    {"record_type": "decision", 1: "x"},
    {"record_type": "decision", "context": {"b": {2: "x", 10: "y"}}},
    {"record_type": "decision", "context": [{"a": 1}, {None: 1}]},
    {"record_type": "decision", "context": {"flag": {True: 1.5}}},
])
def test_a_record_with_a_key_that_is_not_a_string_at_any_depth_is_refused(fields):
    """Found in review: json sorts keys before turning 10 into "10", so the line could never verify."""
    with pytest.raises(TypeError, match="keys must be strings"):
        seal(fields, 1, GENESIS_HASH)
