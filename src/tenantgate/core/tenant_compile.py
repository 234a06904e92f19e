"""A tenant's own files compiled: its policies as validated text for its partition (within ``TenantLimits``),
and every entity file checked against the schema; both cached by content, so a reload parses only what
changed."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from tenantgate.core.cedar_depth import MAX_ENTITY_DEPTH, deepest_chain
from tenantgate.core.entities import EntityDirectory, build_directory
from tenantgate.core.entity_files import EntityFile, read_entity_file
from tenantgate.core.policy_files import PolicyLocation, PolicySource, admit, duplicate_id_message, parse_file
from tenantgate.core.policy_ids import folded
from tenantgate.core.request import MAX_STRING, is_tenant_id
from tenantgate.core.scoping import like_pattern_chars, tenant_problem
from tenantgate.errors import PolicyDiagnostic

# How a policy without @id is named: ``FILE:LINE`` (``core.policy_files``).
_LOCATION_ID = re.compile(r".*\.cedar:[0-9]+")
# Entity files larger than this are parsed by Cedar without the GIL (smaller ones are quicker than getting the
# GIL back, which can take a switch interval, 5 ms, when another thread is busy).
RELEASE_GIL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """How much one tenant's own policy files may hold (``policies.max_tenant_policy_bytes``,
    ``policies.max_tenant_policies``). Cedar parses a tenant's files holding the GIL, and builds its partition
    on the tenant's first request: one tenant's 8 MB file of 60,000 policies stalled every other tenant's
    decisions for 6 s at reload and 2 s at its first request (review finding). Bytes are checked before
    anything is parsed, the count after (from the per-file cache on reloads)."""

    max_bytes: int = 262_144
    max_policies: int = 1_000
    # ``policies.max_tenant_entity_bytes``: a tenant's entities.json, checked before it is parsed. Python's JSON
    # parser and writer hold the GIL over the whole file (about 0.35 s and 0.5 s for 8 MB, review finding).
    max_entity_bytes: int = 1_048_576
    # ``policies.max_tenant_entity_ancestry``: the ancestor links one entity of a tenant's file brings into a
    # decision (``entities.ancestry``). Review finding: a 1 MB file of 120 layers of 16 groups, each a member of
    # all 16 of the next, put 1.8M links into each of one user's decisions: 5.4 s each, every tenant waiting.
    max_entity_ancestry: int = 4_096
    # ``policies.max_tenant_entity_decision_bytes``: the attribute bytes an entity of a tenant's file and its
    # ancestors bring into a decision (``entities.decision_bytes``; review finding: a 939 KB set, 267 ms each).
    max_entity_decision_bytes: int = 32_768
    # ``policies.max_tenant_like_pattern_chars``: characters of all ``like`` patterns in a tenant's policies
    # (``scoping.like_pattern_chars``). Review finding: 1,147 patterns of 200 characters within the byte limit
    # took Cedar 13 s per decision against a 64 KiB string, every tenant waiting.
    max_like_chars: int = 256


DEFAULT_TENANT_LIMITS = TenantLimits()


@dataclass(frozen=True, slots=True)
class TenantPolicies:
    """One tenant's validated policies: Cedar text with an ``@id`` on every policy, ids in text order."""

    tenant: str
    text: str
    ids: tuple[str, ...]
    locations: Mapping[str, PolicyLocation]


@dataclass(frozen=True, slots=True)
class _TenantEntry:
    policy_id: str
    text: str  # the statement, with an @id annotation added when it had none
    line: int
    column: int
    like_chars: int  # characters of its ``like`` patterns (``scoping.like_pattern_chars``)


@dataclass(frozen=True, slots=True)
class _TenantFile:
    """What one tenant file compiles to; cached by content so a reload re-parses only changed files."""

    entries: tuple[_TenantEntry, ...]
    diagnostics: tuple[PolicyDiagnostic, ...]


FileCache = dict[tuple[str, str, str], "_TenantFile | EntityFile"]


def compile_tenant(tenant: str, files: Sequence[PolicySource], schema: Any, schema_key: str,
                    global_ids: Mapping[str, PolicyLocation], global_readings: Mapping[str, PolicyLocation],
                    diagnostics: list[PolicyDiagnostic], cache: FileCache | None, used: FileCache,
                    limits: TenantLimits) -> TenantPolicies:
    locations: dict[str, PolicyLocation] = {}
    texts: list[str] = []
    ids: list[str] = []
    like_chars = 0
    encoded = [source.text.encode("utf-8") for source in files]
    size = sum(map(len, encoded))
    if size > limits.max_bytes:  # refused unparsed: parsing it is what would stall every tenant
        diagnostics.append(PolicyDiagnostic(
            f"tenants/{tenant}", 1, f"the tenant's policy files hold {size:,} bytes, more than "
            f"policies.max_tenant_policy_bytes ({limits.max_bytes:,}); split the tenant's rules or raise the limit"))
        return TenantPolicies(tenant, "", (), {})
    for source, data in zip(files, encoded, strict=True):
        key = (schema_key, source.path, hashlib.sha256(data).hexdigest())
        cached = cache.get(key) if cache is not None else None
        compiled = cached if isinstance(cached, _TenantFile) else _compile_tenant_file(tenant, source, schema)
        used[key] = compiled
        diagnostics.extend(compiled.diagnostics)
        for entry in compiled.entries:
            problem = None
            if entry.policy_id in global_ids:
                problem = duplicate_id_message(global_ids[entry.policy_id], ", a global policy")
            # INVARIANT: a tenant's policy id never reads as a global one in its decisions and audit records
            # (review finding: `Viewer-Can-Read` and `viewer-can-read ` were accepted beside the global
            # `viewer-can-read`): ids are compared as reserved ids are (case, compatibility forms, invisible
            # characters), blanks around them too.
            elif (alike := global_readings.get(_id_reading(entry.policy_id))) is not None:
                problem = (f"policy id reads as that of the global policy at {alike.path}:{alike.line} (compared "
                           "ignoring case, invisible characters and surrounding blanks); rename it")
            elif entry.policy_id in locations:
                problem = duplicate_id_message(locations[entry.policy_id])
            if problem:
                diagnostics.append(PolicyDiagnostic(source.path, entry.line, problem, column=entry.column,
                                                    policy_id=entry.policy_id))
                continue
            like_chars += entry.like_chars
            if like_chars > limits.max_like_chars >= like_chars - entry.like_chars:  # the policy crossing it
                problem = "tenant policies may not use `like` (policies.max_tenant_like_pattern_chars is 0)" \
                    if not limits.max_like_chars else (
                        f"the tenant's `like` patterns hold more than policies.max_tenant_like_pattern_chars "
                        f"({limits.max_like_chars:,}) characters from this policy on: Cedar matches a pattern in time "
                        "proportional to the string's length times the pattern's (about 15 ms for 256 characters "
                        "against a 64 KiB string), holding every tenant's decisions; use fewer or shorter patterns, "
                        "or raise the limit")
                diagnostics.append(PolicyDiagnostic(source.path, entry.line, problem, column=entry.column,
                                                    policy_id=entry.policy_id))
            locations[entry.policy_id] = PolicyLocation(source.path, entry.line)
            texts.append(entry.text)
            ids.append(entry.policy_id)
    if len(ids) > limits.max_policies:
        diagnostics.append(PolicyDiagnostic(
            f"tenants/{tenant}", 1, f"the tenant has {len(ids):,} policies, more than policies.max_tenant_policies "
            f"({limits.max_policies:,}); Cedar evaluates every one of them on each of its decisions"))
    return TenantPolicies(tenant, "\n".join(texts), tuple(ids), locations)


def _location_id_problem(policy_id: str, tenant: str) -> str | None:
    """An ``@id`` written as another file's ``file:line`` (the id a policy without ``@id`` gets) would name a
    global or another tenant's policy in this tenant's decisions and audit records (review finding:
    ``@id("roles.cedar:4")``, ``@id("tenants/globex/secret.cedar:1")``). Its own directory's form is allowed."""
    own = f"tenants/{tenant}/"
    # A tenant's files lie directly in its directory: `tenants/acme/../globex/x.cedar:1` is not one of them.
    if _LOCATION_ID.fullmatch(_id_reading(policy_id)) and not (
            policy_id.startswith(own) and "/" not in policy_id.removeprefix(own)):
        return (f"an @id of the form FILE.cedar:LINE names a policy by its place, and only places in "
                f"tenants/{tenant}/ are this tenant's; rename it")
    return None


def id_readings(global_ids: Mapping[str, PolicyLocation]) -> dict[str, PolicyLocation]:
    """The global ids as a reader takes them (``_id_reading``), for ``compile_tenant``: made once per compile,
    not once per tenant (190,000 foldings at 10,000 tenants made a reload take 9.4 s instead of 1.7 s)."""
    return {_id_reading(pid): location for pid, location in global_ids.items()}


def _id_reading(policy_id: str) -> str:
    """How a reader takes a policy id: ``policy_ids.folded``, without blanks around it."""
    return folded(policy_id).strip()


def _compile_tenant_file(tenant: str, source: PolicySource, schema: Any) -> _TenantFile:
    diagnostics: list[PolicyDiagnostic] = []
    entries: list[_TenantEntry] = []
    seen: dict[str, PolicyLocation] = {}
    for p in parse_file(source, schema, diagnostics):
        dumped = json.dumps(p.est)
        like_chars, like_subject = like_pattern_chars(p.est)
        problem = tenant_problem(p.est, dumped, tenant) or (
            "templates are not supported in tenant policy files" if p.template else None) or (
            f"`like` applied to a string literal of {like_subject:,} characters (at most {MAX_STRING:,}, as a request "
            "string): matching takes time proportional to its length" if like_subject > MAX_STRING else None) or (
            _location_id_problem(p.policy_id, tenant) if p.annotated else None)
        if not admit(p, source, problem, seen, diagnostics):
            continue
        # Every tenant policy carries its id in the text, so results can name it after with_added_str.
        text = p.statement.text if p.annotated else f'@id("{p.policy_id}")\n{p.statement.text}'
        entries.append(_TenantEntry(p.policy_id, text, p.statement.line, p.statement.column, like_chars))
    return _TenantFile(tuple(entries), tuple(diagnostics))


def compile_entities(entity_sources: Mapping[str, PolicySource], schema: Any, schema_key: str,
                      diagnostics: list[PolicyDiagnostic], cache: FileCache | None, used: FileCache,
                      limits: TenantLimits) -> EntityDirectory:
    """Check every entity file (cached by content, like tenant policy files) and build the directory. A tenant's
    file over ``limits.max_entity_bytes`` is refused unparsed; the global file is the operator's."""
    files: dict[str, EntityFile] = {}
    for tenant, source in sorted(entity_sources.items()):
        if tenant and not is_tenant_id(tenant):
            diagnostics.append(PolicyDiagnostic(source.path, 1, "directory name is not a valid tenant id"))
            continue
        size = len(source.text.encode("utf-8"))
        if tenant and size > limits.max_entity_bytes:
            diagnostics.append(PolicyDiagnostic(source.path, 1, f"the tenant's entity file holds {size:,} bytes, more "
                                                f"than policies.max_tenant_entity_bytes ({limits.max_entity_bytes:,}); "
                                                "trim it or raise the limit"))
            continue
        key = (schema_key, "entities:" + source.path, hashlib.sha256(source.text.encode("utf-8")).hexdigest())
        cached = cache.get(key) if cache is not None else None
        checked = cached if isinstance(cached, EntityFile) else _check_entity_file(tenant, source, schema)
        used[key] = checked
        diagnostics.extend(checked.diagnostics)
        files[tenant] = checked
    directory, problems = build_directory(files.pop("", None), files, limits.max_entity_ancestry,
                                          limits.max_entity_decision_bytes)
    diagnostics.extend(problems)
    return directory


def _check_entity_file(tenant: str, source: PolicySource, schema: Any) -> EntityFile:
    """TenantGate's rules, then the schema: the file is parsed once into a cedarpy ``Entities`` handle,
    which validates every entity (types, attributes, allowed parent types)."""
    checked = read_entity_file(source.path, source.text, tenant)
    if checked.diagnostics:
        return checked
    too_deep = deepest_chain({record.uid: record.parents for record in checked.records})
    if too_deep is not None:  # cedarpy's hierarchy code recurses along it (core.cedar_depth)
        entity = f"{too_deep[0]}::{json.dumps(too_deep[1])}"
        problem = PolicyDiagnostic(source.path, 1, f"{entity} and its ancestors form a chain of more than "
                                   f"{MAX_ENTITY_DEPTH} entities; Cedar could exhaust its stack on longer chains, "
                                   "so it is refused before Cedar reads it")
        return EntityFile(source.path, tenant, (), (problem,))
    document = json.dumps(checked.cedar_json())
    try:
        # A large file takes Cedar seconds (7.7 s for 100,000 entities): with the GIL held, every tenant's
        # decisions would wait that long (review finding: 3.7 s stalls while another tenant's file reloaded).
        cedarpy.Entities.from_json_str(document, schema, release_gil=len(document) > RELEASE_GIL_BYTES)
    except ValueError as err:
        problem = PolicyDiagnostic(source.path, 1, _entity_error(document, schema, err))
        return EntityFile(source.path, tenant, (), (problem,))
    return checked


def _entity_error(document: str, schema: Any, err: ValueError) -> str:
    """cedarpy's handle error is terse ("entity does not conform to the schema"); the authorizer's entity
    parser names the entity and the attribute, so ask it (entities are parsed before the request)."""
    probe = {"principal": {"type": "User", "id": "probe"}, "action": {"type": "Action", "id": "probe"},
             "resource": {"type": "User", "id": "probe"}, "context": {}}
    for message in cedarpy.is_authorized(probe, "", document, schema=schema).diagnostics.errors:
        _, marker, tail = message.rpartition("]: ")
        if message.startswith("failed to parse entities") and marker:
            return "does not match the schema: " + tail.replace("\n", " ")
    return f"does not match the schema: {err}"
