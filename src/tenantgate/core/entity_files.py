"""One entity data file, read and checked against TenantGate's rules; ``core.entities`` builds the views
decisions read from the checked files.

Files: ``policies/entities.json`` (global, seen by every tenant) and ``policies/tenants/<tenant>/entities.json``
(seen only in decisions about that tenant's resources). Each holds a Cedar entity list
(``[{"uid": {"type", "id"}, "attrs": {...}, "parents": [{"type", "id"}, ...]}]``). They are checked against the
rules below here, validated against the schema by the compiler (the only other cedarpy importer besides the
engine), and reloaded together with the policies.

Rules (a file that breaks one is refused at load, like an invalid policy):

* an entity of ``tenants/<t>/entities.json`` that states a ``tenant`` attribute must state ``<t>``;
* principal entities (``User``, ``Agent``) belong to a tenant: never in the global file. Their ``tenant``,
  ``intents``, ``issuer`` (and ``onBehalfOf``) attributes are TenantGate's own: a file may not set
  ``intents``, ``issuer`` or ``onBehalfOf``, and the rest is filled in (``tenant`` = the file's tenant,
  ``roles`` = ``[]``) before schema validation;
* global entities carry no ``tenant`` attribute; a tenant's entity may not reuse a global entity's uid;
* the parent relation has no cycles.

The last two look past one file: ``core.entities.build_directory`` checks them, with the ancestor limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tenantgate.core.strictjson import parse_strict_json
from tenantgate.errors import PolicyDiagnostic

PRINCIPAL_TYPES = ("User", "Agent")
# Attributes only a verified token may give a principal.
TOKEN_ONLY_ATTRIBUTES = frozenset({"intents", "issuer", "onBehalfOf"})
_ENTITY_KEYS = frozenset({"uid", "attrs", "parents"})
MAX_ENTITIES_PER_FILE = 200_000

Uid = tuple[str, str]


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """One entity as its file declares it (principal records completed with TenantGate's attributes)."""

    uid: Uid
    attrs: Mapping[str, Any]
    parents: tuple[Uid, ...]

    @property
    def roles(self) -> tuple[str, ...]:
        """The ``roles`` attribute as a tuple of strings (empty when absent)."""
        roles = self.attrs.get("roles", ())
        return tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, (list, tuple)) else ()

    def cedar_json(self, parents: Iterable[Uid] | None = None) -> dict[str, Any]:
        """The Cedar JSON form, with ``parents`` (default: the declared ones)."""
        return {"uid": {"type": self.uid[0], "id": self.uid[1]}, "attrs": dict(self.attrs),
                "parents": [{"type": t, "id": i} for t, i in (self.parents if parents is None else parents)]}


@dataclass(frozen=True, slots=True)
class EntityFile:
    """One ``entities.json`` after TenantGate's rules (``tenant`` is "" for the global file)."""

    path: str
    tenant: str
    records: tuple[EntityRecord, ...]
    diagnostics: tuple[PolicyDiagnostic, ...] = ()

    def cedar_json(self) -> list[dict[str, Any]]:
        return [r.cedar_json() for r in self.records]


def read_entity_file(path: str, text: str, tenant: str) -> EntityFile:
    """Parse and check one entity file (``tenant`` "" = global). Problems are returned as diagnostics.

    Schema validation is the compiler's job; this checks shape and TenantGate's tenancy rules and completes
    principal records, so the result is what the schema is asked about.
    """
    problems: list[PolicyDiagnostic] = []

    def problem(message: str, index: int | None = None) -> None:
        where = f"entity {index}: " if index is not None else ""
        problems.append(PolicyDiagnostic(path, 1, where + message))

    try:
        data = parse_strict_json(text, max_depth=64)
    except json.JSONDecodeError as err:
        # At the line and column the JSON parser stopped at, not line 1 with the position in the message.
        problems.append(PolicyDiagnostic(path, err.lineno, f"not valid JSON: {err.msg}", column=err.colno))
        return EntityFile(path, tenant, (), tuple(problems))
    except ValueError as err:  # strict-JSON rules (duplicate member names, NaN, ...): no position known
        problem(f"not valid JSON: {err}")
        return EntityFile(path, tenant, (), tuple(problems))
    if not isinstance(data, list):
        problem("must be a JSON array of Cedar entities")
        return EntityFile(path, tenant, (), tuple(problems))
    if len(data) > MAX_ENTITIES_PER_FILE:
        problem(f"more than {MAX_ENTITIES_PER_FILE} entities")
        return EntityFile(path, tenant, (), tuple(problems))
    records: list[EntityRecord] = []
    seen: set[Uid] = set()
    for index, item in enumerate(data):
        record = _record(item, tenant, lambda message, i=index: problem(message, i))
        if record is None:
            continue
        if record.uid in seen:
            problem(f"{entity_name(record.uid)} is declared twice", index)
            continue
        seen.add(record.uid)
        records.append(record)
    return EntityFile(path, tenant, tuple(records), tuple(problems))


def _record(item: Any, tenant: str, problem: Any) -> EntityRecord | None:
    if not isinstance(item, dict):
        problem("must be an object with uid, attrs and parents")
        return None
    unknown = sorted(set(item) - _ENTITY_KEYS)
    if unknown:
        problem(f"unknown member(s) {', '.join(unknown)} (allowed: uid, attrs, parents)")
        return None
    uid = _uid(item.get("uid"))
    if uid is None:
        problem('uid must be {"type": "<EntityType>", "id": "<id>"} with non-empty strings')
        return None
    attrs = item.get("attrs", {})
    parents_raw = item.get("parents", [])
    if not isinstance(attrs, dict):
        problem(f"{entity_name(uid)}: attrs must be an object")
        return None
    if not isinstance(parents_raw, list) or any(_uid(p) is None for p in parents_raw):
        problem(f"{entity_name(uid)}: parents must be a list of {{\"type\", \"id\"}} objects")
        return None
    parents = tuple(dict.fromkeys(u for p in parents_raw if (u := _uid(p)) is not None))
    entity_type = uid[0]
    if entity_type.split("::")[-1] == "Action":
        problem(f"{entity_name(uid)}: actions come from the schema, not from entity data")
        return None
    stated_tenant = attrs.get("tenant")
    if not tenant:
        if entity_type in PRINCIPAL_TYPES:
            problem(f"{entity_name(uid)}: users and agents belong to a tenant; declare them in "
                    "tenants/<tenant>/entities.json")
            return None
        if "tenant" in attrs:
            problem(f"{entity_name(uid)}: global entities cannot carry a tenant attribute")
            return None
        return EntityRecord(uid, MappingProxyType(dict(attrs)), parents)
    # INVARIANT: an entity in a tenant's file belongs to that tenant and can never claim another.
    if stated_tenant is not None and stated_tenant != tenant:
        problem(f"{entity_name(uid)}: tenant attribute {stated_tenant!r} is not this file's tenant {tenant!r}")
        return None
    if entity_type in PRINCIPAL_TYPES:
        clash = sorted(TOKEN_ONLY_ATTRIBUTES & attrs.keys())
        if clash:
            problem(f"{entity_name(uid)}: {', '.join(clash)} come only from verified tokens")
            return None
        roles = attrs.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            problem(f"{entity_name(uid)}: roles must be a list of non-empty strings")
            return None
        completed = {**attrs, "tenant": tenant, "roles": roles, "intents": [], "issuer": ""}
        if entity_type == "Agent":
            completed["onBehalfOf"] = ""
        return EntityRecord(uid, MappingProxyType(completed), parents)
    return EntityRecord(uid, MappingProxyType(dict(attrs)), parents)


def _uid(value: Any) -> Uid | None:
    if (isinstance(value, dict) and set(value) == {"type", "id"} and isinstance(value["type"], str)
            and isinstance(value["id"], str) and value["type"] and value["id"]):
        return value["type"], value["id"]
    return None


def entity_name(uid: Uid) -> str:
    """An entity as diagnostics name it: ``Type::"id"``."""
    return f'{uid[0]}::"{uid[1]}"'
