"""A tenant's entity data is bounded before cedarpy reads it: a long chain of parents (which crashed cedarpy, so
that test runs in a subprocess), ancestry links and attribute bytes that would flood every decision, and ancestors
that would take seconds to close. Policy and schema text depth is in test_policy_depth.py.
"""

from __future__ import annotations

import json

import pytest

from support.policy_depth import GLOBAL, SCHEMA_TEXT, _in_subprocess
from tenantgate.core.cedar_depth import MAX_ENTITY_DEPTH, deepest_chain
from tenantgate.core.compiler import PolicySource, TenantLimits, compile_policies
from tenantgate.errors import PolicyError

# A schema in which groups may contain groups, and users belong to groups.
GROUPS_SCHEMA = SCHEMA_TEXT.replace("entity User = {", "entity Group in [Group];\nentity User in [Group] = {", 1)


def _group_chain(length: int) -> str:
    """``length`` groups, each the parent of the one before."""
    return json.dumps([{"uid": {"type": "Group", "id": f"g{k}"}, "attrs": {},
                        "parents": [{"type": "Group", "id": f"g{k + 1}"}] if k + 1 < length else []}
                       for k in range(length)])


def test_a_tenants_entity_file_with_a_long_chain_of_parents_is_refused_not_a_crash():
    # cedarpy's hierarchy code crashed at about 20,000 (and took 9 s and 2.7 GiB at 5,000).
    out = _in_subprocess({"kind": "entities", "schema": GROUPS_SCHEMA, "text": _group_chain(30000)})
    (diagnostic,) = out["compile"]
    assert diagnostic.startswith("tenants/acme/entities.json:1: Group::\"")
    assert "and its ancestors form a chain of more than 256 entities" in diagnostic


def test_entity_chains_up_to_the_bound_load_and_longer_ones_are_refused():
    schema = PolicySource("schema.cedarschema", GROUPS_SCHEMA)
    deep = TenantLimits(max_entity_ancestry=10**6)  # a chain of 256 brings 32,896 ancestor links
    compile_policies(schema, GLOBAL, {}, None,
                     {"acme": PolicySource("tenants/acme/entities.json", _group_chain(MAX_ENTITY_DEPTH))}, deep)
    with pytest.raises(PolicyError, match='Group::"g0" and its ancestors form a chain of more than 256'):
        compile_policies(schema, GLOBAL, {}, None,
                         {"acme": PolicySource("tenants/acme/entities.json", _group_chain(MAX_ENTITY_DEPTH + 1))},
                         deep)


def test_the_chain_measure_counts_the_longest_path_and_stops_at_cycles():
    assert deepest_chain({"a": ["b", "x"], "b": ["c"], "c": []}, limit=3) is None
    assert deepest_chain({"a": ["b"], "b": ["c"], "c": ["d"], "d": []}, limit=3) == "a"
    assert deepest_chain({"a": ["b"], "b": ["a"]}, limit=2) is None  # a cycle: reported by core.entities


def _layers(layers: int, width: int) -> str:
    """A user in every group of the first layer; each group a member of every group of the next layer."""
    records = [{"uid": {"type": "User", "id": "mallory"}, "attrs": {},
                "parents": [{"type": "Group", "id": f"L0-{g}"} for g in range(width)]}]
    for layer in range(layers):
        nxt = [{"type": "Group", "id": f"L{layer + 1}-{g}"} for g in range(width)] if layer + 1 < layers else []
        records += [{"uid": {"type": "Group", "id": f"L{layer}-{g}"}, "attrs": {}, "parents": nxt}
                    for g in range(width)]
    return json.dumps(records)


def test_a_tenants_group_hierarchy_that_would_flood_every_decision_with_ancestor_links_is_refused():
    # Review finding (MEDIUM): 120 layers of 16 groups, each in all 16 of the next, fit in 1 MiB and put 1.8M
    # ancestor links into each decision about the user: 5.4 s each, with every other tenant waiting.
    schema = PolicySource("schema.cedarschema", GROUPS_SCHEMA)
    entities = {"acme": PolicySource("tenants/acme/entities.json", _layers(12, 8))}
    with pytest.raises(PolicyError) as err:
        compile_policies(schema, GLOBAL, {}, None, entities)
    (diagnostic,) = err.value.diagnostics
    assert diagnostic.path == "tenants/acme/entities.json"
    assert diagnostic.message.startswith('User::"mallory" brings 4,320 ancestor links into each decision about it')
    assert "policies.max_tenant_entity_ancestry (4,096)" in diagnostic.message
    compile_policies(schema, GLOBAL, {}, None, entities, TenantLimits(max_entity_ancestry=4_320))


def test_the_ancestry_limit_counts_ancestors_and_theirs_and_leaves_the_global_file_alone():
    schema = PolicySource("schema.cedarschema", GROUPS_SCHEMA)
    chain = PolicySource("tenants/acme/entities.json", _group_chain(91))  # g0: 90 + 89 + ... + 0 = 4,095
    compile_policies(schema, GLOBAL, {}, None, {"acme": chain})
    longer = PolicySource("tenants/acme/entities.json", _group_chain(92))
    with pytest.raises(PolicyError, match='Group::"g0" brings 4,186 ancestor links'):
        compile_policies(schema, GLOBAL, {}, None, {"acme": longer})
    compile_policies(schema, GLOBAL, {}, None, {"": PolicySource("entities.json", _group_chain(200))})


NOTES_SCHEMA = SCHEMA_TEXT.replace("entity User = {", "entity Group in [Group] = { notes?: String };\n"
                                   "entity User in [Group] = {", 1)


def _member_of_noted_groups(groups: int, note_bytes: int) -> str:
    records = [{"uid": {"type": "User", "id": "mallory"}, "attrs": {},
                "parents": [{"type": "Group", "id": f"g{k}"} for k in range(groups)]}]
    records += [{"uid": {"type": "Group", "id": f"g{k}"}, "attrs": {"notes": "n" * note_bytes}, "parents": []}
                for k in range(groups)]
    return json.dumps(records)


def test_entity_data_that_would_flood_every_decision_with_attribute_bytes_is_refused():
    # Review finding (MEDIUM): under the ancestry limit, one invoice holding a set of 150,000 numbers (939 KB)
    # cost 267 ms a decision, and a user in 40 groups each holding 3,000 strings 221 ms, every tenant waiting.
    schema = PolicySource("schema.cedarschema", NOTES_SCHEMA)
    fits = PolicySource("tenants/acme/entities.json", _member_of_noted_groups(2, 12_000))
    compile_policies(schema, GLOBAL, {}, None, {"acme": fits})
    heavy = PolicySource("tenants/acme/entities.json", _member_of_noted_groups(3, 12_000))
    with pytest.raises(PolicyError) as err:
        compile_policies(schema, GLOBAL, {}, None, {"acme": heavy})
    (diagnostic,) = err.value.diagnostics
    assert diagnostic.message.startswith('User::"mallory" and its ancestors bring 36,0')
    assert "policies.max_tenant_entity_decision_bytes (32,768)" in diagnostic.message
    compile_policies(schema, GLOBAL, {}, None, {"acme": heavy}, TenantLimits(max_entity_decision_bytes=40_000))
    big_global = json.dumps([{"uid": {"type": "Group", "id": "all"}, "attrs": {"notes": "n" * 100_000}, "parents": []}])
    compile_policies(schema, GLOBAL, {}, None, {"": PolicySource("entities.json", big_global)})  # the operator's


def _wide_group_members(users: int) -> str:
    """2,000 groups, a group ``h`` in all of them, and ``users`` users in ``h``: each user has 4,001 ancestor links
    (under the default limit), and closing them copies about 2,000 entries a user."""
    records = [{"uid": {"type": "Group", "id": f"g{k}"}, "attrs": {}, "parents": []} for k in range(2_000)]
    records.append({"uid": {"type": "Group", "id": "h"}, "attrs": {},
                    "parents": [{"type": "Group", "id": f"g{k}"} for k in range(2_000)]})
    records += [{"uid": {"type": "User", "id": f"u{n}"}, "attrs": {}, "parents": [{"type": "Group", "id": "h"}]}
                for n in range(users)]
    return json.dumps(records)


def test_entity_data_whose_ancestors_would_take_seconds_to_close_is_refused():
    # Review finding: 10,000 users in such a group (1 MiB, within every other limit) took 18 s and about 300 MiB
    # to close at load. The closures of one tenant's file may copy at most 1,000,000 ancestor entries.
    schema = PolicySource("schema.cedarschema", GROUPS_SCHEMA)
    compile_policies(schema, GLOBAL, {}, None, {"acme": PolicySource("tenants/acme/entities.json",
                                                                     _wide_group_members(400))})
    with pytest.raises(PolicyError, match="ancestors come to more than 1,000,000 entries together"):
        compile_policies(schema, GLOBAL, {}, None, {"acme": PolicySource("tenants/acme/entities.json",
                                                                         _wide_group_members(600))})
