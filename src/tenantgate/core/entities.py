"""Tenant-scoped entity data as decisions see it: one view per tenant of the Cedar entities (users, groups,
roles, resource hierarchy) it may see, its own then the global ones, each record with its transitive ancestors.

``core.entity_files`` reads and checks each ``entities.json``; ``build_directory`` builds the views from the
checked files and refuses what only shows across files: a tenant's entity reusing a global entity's uid, a
cycle of parents, an entity that brings more into each decision about it than the tenant limits allow.

Precedence (INVARIANT): TenantGate builds the principal and the resource entity of every request itself, from
the verified token and the request. Entity data never replaces them: it only *adds* what they lack, i.e.
attributes the token or request did not set, and ancestors (group memberships, containing folders, roles).
``tenant`` and the principal's ``roles``/``intents``/``issuer``/``onBehalfOf`` always come from TenantGate, so
entity data can never change whose tenant a request is about. The principal is enriched only in decisions
about its own tenant's resources.

Decisions do not clone a whole tenant's entity set per request (``Entities.with_added_json_str`` copies the
base: ~0.3 ms at 1,000 entities, ~4 ms at 10,000). Instead each record knows its transitive ancestors, and a
request is evaluated on a *slice*: the principal, the resource and their ancestors' entities, whose parents
are the flattened ancestor sets (Cedar's ``in`` is transitive, so flattening keeps every answer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tenantgate.core.entity_files import EntityFile, EntityRecord, Uid, entity_name
from tenantgate.errors import PolicyDiagnostic

# Ancestor entries the closures of one tenant's file may copy in all (``_closure``): about 0.3 s to compute.
MAX_TENANT_ANCESTOR_ENTRIES = 1_000_000


@dataclass(frozen=True, slots=True)
class EntityView:
    """The entity data one tenant's decisions may see: its own records, then the global ones.

    ``ancestors`` maps each record of this view to its transitive ancestors (declared parents and theirs,
    including parents that are not declared as entities themselves).
    """

    records: Mapping[Uid, EntityRecord] = field(default_factory=dict)
    ancestors: Mapping[Uid, tuple[Uid, ...]] = field(default_factory=dict)
    shared: EntityView | None = None

    @property
    def empty(self) -> bool:
        return not self.records and (self.shared is None or self.shared.empty)

    def record(self, uid: Uid) -> EntityRecord | None:
        found = self.records.get(uid)
        if found is None and self.shared is not None:
            return self.shared.record(uid)
        return found

    def ancestors_of(self, uid: Uid) -> tuple[Uid, ...]:
        found = self.ancestors.get(uid)
        if found is None and self.shared is not None:
            return self.shared.ancestors_of(uid)
        return found or ()

    def count(self) -> int:
        return len(self.records) + (self.shared.count() if self.shared is not None else 0)

    def request_slice(self, principal: dict[str, Any], resource: dict[str, Any], *,
                      enrich_principal: bool) -> list[dict[str, Any]]:
        """The entity list one decision is evaluated on: TenantGate's principal and resource entities,
        enriched from this view, then the entities of their ancestors.

        INVARIANT: ``principal`` and ``resource`` are TenantGate's own entities; a record of the same uid only
        adds attributes they do not set and its ancestors as parents. ``enrich_principal`` is False when the
        principal is of another tenant than this view (break-glass): its own tenant's data is not in this
        view, and the same uid here would be another tenant's entity.
        """
        principal_uid = _uid_of(principal)
        resource_uid = _uid_of(resource)
        out = [self._enriched(principal, principal_uid) if enrich_principal else principal,
               self._enriched(resource, resource_uid)]
        seen = {principal_uid, resource_uid}
        for entity in out[:2]:
            for parent in entity["parents"]:
                uid = (parent["type"], parent["id"])
                if uid in seen:
                    continue
                seen.add(uid)
                record = self.record(uid)
                if record is not None:
                    out.append(record.cedar_json(self.ancestors_of(uid)))
        return out

    def _enriched(self, entity: dict[str, Any], uid: Uid) -> dict[str, Any]:
        record = self.record(uid)
        if record is None:
            return entity
        # The request's own attributes win; the record only fills in what they lack.
        attrs = {**{k: v for k, v in record.attrs.items() if k != "tenant"}, **entity["attrs"]}
        parents = [*entity.get("parents", ()),
                   *({"type": t, "id": i} for t, i in self.ancestors_of(uid))]
        return {"uid": entity["uid"], "attrs": attrs, "parents": parents}


def _uid_of(entity: Mapping[str, Any]) -> Uid:
    return entity["uid"]["type"], entity["uid"]["id"]


EMPTY_VIEW = EntityView()


@dataclass(frozen=True, slots=True)
class EntityDirectory:
    """Every tenant's entity view. A tenant without its own file sees only the global entities."""

    shared: EntityView = EMPTY_VIEW
    tenants: Mapping[str, EntityView] = field(default_factory=dict)

    def view(self, tenant: str) -> EntityView:
        """INVARIANT: the view of exactly ``tenant`` (plus global data); never another tenant's records."""
        return self.tenants.get(tenant, self.shared)

    @property
    def empty(self) -> bool:
        return self.shared.empty and not self.tenants


EMPTY_DIRECTORY = EntityDirectory()


def build_directory(shared: EntityFile | None, tenants: Mapping[str, EntityFile], max_ancestry: int = 0,
                    max_decision_bytes: int = 0) -> tuple[EntityDirectory, list[PolicyDiagnostic]]:
    """Views with ancestor closures for checked files; diagnostics for uid clashes with the global file, for
    cycles, and for the first entity of a tenant's file whose ``ancestry`` exceeds ``max_ancestry`` or whose
    ``decision_bytes`` exceed ``max_decision_bytes`` (0: no limit; the global file is the operator's). The
    directory is only meaningful when no diagnostics are returned."""
    problems: list[PolicyDiagnostic] = []
    shared_records = {r.uid: r for r in shared.records} if shared is not None else {}
    shared_view = EntityView(MappingProxyType(shared_records),
                             MappingProxyType(_closure(shared_records, {}, shared, problems)))
    views: dict[str, EntityView] = {}
    for tenant, file in sorted(tenants.items()):
        own: dict[Uid, EntityRecord] = {}
        for record in file.records:
            if record.uid in shared_records:
                problems.append(PolicyDiagnostic(file.path, 1, f"{entity_name(record.uid)} is also a global entity "
                                                 "(entities.json); a tenant may not redefine it"))
                continue
            own[record.uid] = record
        closures = _closure(own, shared_view.ancestors, file, problems, MAX_TENANT_ANCESTOR_ENTRIES)
        view = EntityView(MappingProxyType(own), MappingProxyType(closures), shared_view)
        problem = _weight_problem(view, own, file.path, max_ancestry, max_decision_bytes)
        if problem is not None:
            problems.append(problem)
        views[tenant] = view
    return EntityDirectory(shared_view, MappingProxyType(views)), problems


def _weight_problem(view: EntityView, own: Mapping[Uid, EntityRecord], path: str, max_ancestry: int,
                    max_decision_bytes: int) -> PolicyDiagnostic | None:
    """The first entity of a tenant's file (in file order) that brings more into each decision about it than
    the limits allow (0: no limit). The closures are computed already: this adds at most as much work."""
    if max_ancestry:
        over = next(((uid, n) for uid in own if (n := ancestry(view, uid)) > max_ancestry), None)
        if over is not None:
            return PolicyDiagnostic(path, 1, f"{entity_name(over[0])} brings {over[1]:,} ancestor links into each "
                                    f"decision about it, more than policies.max_tenant_entity_ancestry "
                                    f"({max_ancestry:,}); flatten the group hierarchy or raise the limit")
    if max_decision_bytes:
        sizes: dict[Uid, int] = {}
        heavy = next(((uid, n) for uid in own if (n := decision_bytes(view, uid, sizes)) > max_decision_bytes), None)
        if heavy is not None:
            return PolicyDiagnostic(path, 1, f"{entity_name(heavy[0])} and its ancestors bring {heavy[1]:,} bytes of "
                                    "attributes into each decision about it, more than "
                                    f"policies.max_tenant_entity_decision_bytes ({max_decision_bytes:,}); trim "
                                    "them or raise the limit")
    return None


def decision_bytes(view: EntityView, uid: Uid, sizes: dict[Uid, int]) -> int:
    """The JSON bytes of the attributes a decision about ``uid`` carries from entity data (``request_slice``): its
    record's and each ancestor's. Encoding them and Cedar's reading them hold the GIL, about 0.3 ms a KB here
    (review finding: one invoice holding a set of 150,000 numbers, 939 KB, cost 267 ms a decision). ``sizes``
    keeps each record's size across calls."""
    total = 0
    for each in (uid, *view.ancestors_of(uid)):
        size = sizes.get(each)
        if size is None:
            record = view.record(each)
            size = sizes[each] = len(json.dumps(dict(record.attrs), separators=(",", ":"))) if record else 0
        total += size
    return total


def ancestry(view: EntityView, uid: Uid) -> int:
    """The ancestor links a decision about ``uid`` carries (``request_slice``): its ancestors, as its parents,
    and each ancestor's own ancestors, as theirs. What a decision costs to encode and for Cedar to read grows
    with it, holding the GIL."""
    ancestors = view.ancestors_of(uid)
    return len(ancestors) + sum(len(view.ancestors_of(a)) for a in ancestors)


def _closure(records: Mapping[Uid, EntityRecord], shared_ancestors: Mapping[Uid, tuple[Uid, ...]],
             file: EntityFile | None, problems: list[PolicyDiagnostic], budget: int = 0) -> dict[Uid, tuple[Uid, ...]]:
    """Transitive ancestors of every record; a parent that is a global entity brings its global ancestors.
    Iterative depth-first search (no recursion limit), reporting the first cycle found. ``budget`` (0: none)
    bounds the ancestor entries copied in all: past it the file is refused (review finding: 10,000 users in a
    group with 2,000 parents, within every other limit, took 18 s and about 300 MiB to close)."""
    done: dict[Uid, tuple[Uid, ...]] = {}
    work = 0
    for start in records:
        if start in done:
            continue
        stack: list[tuple[Uid, int]] = [(start, 0)]
        on_path: set[Uid] = {start}
        while stack:
            uid, index = stack[-1]
            parents = records[uid].parents
            if index < len(parents):
                stack[-1] = (uid, index + 1)
                parent = parents[index]
                if parent in on_path:
                    if file is not None:
                        problems.append(PolicyDiagnostic(file.path, 1, f"the parents of {entity_name(parent)} form a "
                                                         "cycle"))
                    return done
                if parent in records and parent not in done:
                    stack.append((parent, 0))
                    on_path.add(parent)
                continue
            stack.pop()
            on_path.discard(uid)
            found: dict[Uid, None] = {}
            for parent in parents:
                inherited = done.get(parent, shared_ancestors.get(parent, ()))
                work += 1 + len(inherited)
                if budget and work > budget:
                    if file is not None:
                        problems.append(PolicyDiagnostic(file.path, 1, f"the entities' ancestors come to more than "
                                                         f"{budget:,} entries together; flatten the group hierarchy"))
                    return done
                found[parent] = None
                found.update(dict.fromkeys(inherited))
            done[uid] = tuple(found)
    return done
