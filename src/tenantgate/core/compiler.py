"""Compiling policy files into pre-parsed Cedar handles, with per-tenant partitions.

Global policies (``policies/*.cedar``) and the built-in tenant guardrail form one pre-parsed PolicySet.
A tenant's own policies (``policies/tenants/<tenant>/*.cedar``) are kept as validated text and added to
the global set only when that tenant's partition is first needed (``Engine`` caches partitions), so memory
stays bounded with many tenants and Cedar never scans one tenant's policies for another tenant's resources.

Everything is validated strictly against the schema at compile time; any problem is a ``PolicyError`` with
file:line and the policy id, and nothing partial is returned. Together with ``engine.py``, ``entitycache.py``,
``policy_errors.py`` and ``schema.py`` this is the only code that imports cedarpy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from tenantgate.core.cedar_depth import MAX_ENTITY_DEPTH, deepest_chain, schema_depth_problem
from tenantgate.core.cedar_text import (
    Statement,
    escape_unprintable,
    split_statements,
)
from tenantgate.core.entities import EMPTY_DIRECTORY, EntityDirectory, EntityFile, build_directory, read_entity_file
from tenantgate.core.policy_errors import depth_diagnostics, locate_parse_error, unassembled
from tenantgate.core.policy_ids import POSITIONAL, id_problem
from tenantgate.core.request import MAX_STRING, is_tenant_id
from tenantgate.core.schema import check_principal_shape, check_request_shape
from tenantgate.core.scoping import global_problem, like_pattern_chars, tenant_problem
from tenantgate.core.versions import partition_versions, policy_version
from tenantgate.errors import PolicyDiagnostic, PolicyError

GUARDRAIL_ID = "tenantgate::tenant-guardrail"
# Entity files larger than this are parsed by Cedar without the GIL (smaller ones are quicker than getting the
# GIL back, which can take a switch interval, 5 ms, when another thread is busy).
RELEASE_GIL_BYTES = 64 * 1024

# INVARIANT: defence in depth for the tenant check done in code before Cedar. Written with `has` guards so
# it cannot error (an erroring forbid is skipped by Cedar): a principal or resource without a tenant is
# forbidden, as is any tenant mismatch not covered by a break-glass grant. `context.breakGlass` is set only
# by TenantGate after it found an active grant for exactly this operator, target tenant and action; requests
# cannot set it (reserved context key).
GUARDRAIL_TEXT = """\
@id("tenantgate::tenant-guardrail")
forbid (principal, action, resource)
unless {
  (principal has tenant && resource has tenant && principal.tenant == resource.tenant) ||
  (context has breakGlass && context.breakGlass has targetTenant && resource has tenant &&
   context.breakGlass.targetTenant == resource.tenant)
};
"""


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
class PolicySource:
    """One file's text. ``path`` is how messages name it (relative to the policy directory)."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class PolicyLocation:
    path: str
    line: int


@dataclass(frozen=True, slots=True)
class TenantPolicies:
    """One tenant's validated policies: Cedar text with an ``@id`` on every policy, ids in text order."""

    tenant: str
    text: str
    ids: tuple[str, ...]
    locations: Mapping[str, PolicyLocation]


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    """Pre-parsed, validated global set (with the guardrail), schema, and tenant partitions' sources."""

    policy_set: Any
    schema: Any
    version: str  # the whole set's (core.versions): for operators, never in a decision's answer or record
    locations: Mapping[str, PolicyLocation]
    policy_count: int
    tenants: Mapping[str, TenantPolicies] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    # Tenant-scoped entity data (policies/entities.json, tenants/<t>/entities.json), see core.entities.
    entities: EntityDirectory = EMPTY_DIRECTORY
    global_version: str = ""  # schema and global files only
    tenant_versions: Mapping[str, str] = field(default_factory=dict)  # tenants with files of their own
    # Tenants whose files could not be loaded and who have no valid files to fall back on (started so, see
    # ``policy.holdback``): every decision about their resources is denied, never answered by the global set.
    quarantined: frozenset[str] = frozenset()

    def version_for(self, tenant: str) -> str:
        """The version decisions about ``tenant``'s resources carry: schema, global files and that tenant's
        own files (core.versions)."""
        return self.tenant_versions.get(tenant, self.global_version)

    def locate(self, policy_id: str, tenant: str = "") -> PolicyLocation | None:
        partition = self.tenants.get(tenant)
        if partition is not None and policy_id in partition.locations:
            return partition.locations[policy_id]
        return self.locations.get(policy_id)

    @property
    def total_policies(self) -> int:
        return self.policy_count + sum(len(t.ids) for t in self.tenants.values())


@dataclass(slots=True)
class _Parsed:
    """One policy of a file, as parsed: its id, EST, statement and whether the id came from ``@id``."""

    policy_id: str
    est: dict[str, Any]
    statement: Statement
    annotated: bool
    template: bool


def compile_policies(schema_source: PolicySource, sources: Sequence[PolicySource],
                     tenant_sources: Mapping[str, Sequence[PolicySource]] | None = None,
                     cache: FileCache | None = None,
                     entity_sources: Mapping[str, PolicySource] | None = None,
                     limits: TenantLimits = DEFAULT_TENANT_LIMITS) -> CompiledPolicies:
    """Parse and strictly validate the schema, the global files and every tenant's files.

    ``entity_sources`` maps a tenant ("" for the global file) to its ``entities.json``; each is checked
    against TenantGate's entity rules and validated against the schema (``core.entities``).

    ``cache`` (owned by the caller, e.g. the reloading policy store) maps tenant file contents to their
    compiled form: unchanged tenant files are not parsed again, and on success the cache is replaced by
    the entries this compilation used. ``limits`` bound each tenant's own files. Raises ``PolicyError``
    listing every problem with file:line and policy id.
    """
    tenant_sources = tenant_sources or {}
    # INVARIANT: no schema or policy text reaches cedarpy before its depth is checked: cedarpy overflows the
    # native stack on deep nesting and kills the process (core.cedar_depth).
    too_deep = schema_depth_problem(schema_source.text)
    if too_deep is not None:
        raise PolicyError("invalid schema", [PolicyDiagnostic(schema_source.path, too_deep.line, too_deep.message,
                                                              column=too_deep.column)])
    try:
        schema = cedarpy.Schema.from_str(schema_source.text)
    except ValueError as err:
        raise PolicyError("invalid schema", [PolicyDiagnostic(schema_source.path, 1, str(err))]) from err
    check_principal_shape(schema, schema_source.path)
    check_request_shape(schema, schema_source.path)

    diagnostics: list[PolicyDiagnostic] = []
    static: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    locations: dict[str, PolicyLocation] = {}
    for source in sources:
        for p in _parse_file(source, schema, diagnostics):
            problem = global_problem(p.est)
            if _admit(p, source, problem, locations, diagnostics):
                (templates if p.template else static)[p.policy_id] = p.est

    tenants: dict[str, TenantPolicies] = {}
    schema_key = hashlib.sha256(schema_source.text.encode("utf-8")).hexdigest()
    used: FileCache = {}
    for tenant, files in sorted(tenant_sources.items()):
        if not is_tenant_id(tenant):
            diagnostics.append(PolicyDiagnostic(f"tenants/{tenant}", 1, "directory name is not a valid tenant id"))
            continue
        tenants[tenant] = _compile_tenant(tenant, files, schema, schema_key, locations,
                                          diagnostics, cache, used, limits)
    entity_sources = entity_sources or {}
    directory = _compile_entities(entity_sources, schema, schema_key, diagnostics, cache, used, limits)
    if diagnostics:
        raise PolicyError(f"{len(diagnostics)} problem(s) in the policy set", diagnostics)
    if cache is not None:
        cache.clear()
        cache.update(used)

    guard = json.loads(cedarpy.policies_to_json_str(GUARDRAIL_TEXT))["staticPolicies"]
    static[GUARDRAIL_ID] = next(iter(guard.values()))
    locations[GUARDRAIL_ID] = PolicyLocation("<built-in>", 1)
    document = {"staticPolicies": static, "templates": templates, "templateLinks": []}
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as err:
        raise PolicyError(f"cannot assemble the policy set: {err}",
                          unassembled({"staticPolicies": static, "templates": templates}, locations)) from err
    all_sources = [*sources, *(f for files in tenant_sources.values() for f in files), *entity_sources.values()]
    tenant_files = {tenant: list(files) for tenant, files in tenant_sources.items()}
    for tenant, source in entity_sources.items():
        if tenant:
            tenant_files.setdefault(tenant, []).append(source)
    global_entities = [entity_sources[""]] if "" in entity_sources else []
    global_version, tenant_versions = partition_versions(schema_source, [*sources, *global_entities], tenant_files)
    return CompiledPolicies(
        policy_set=policy_set,
        schema=schema,
        version=policy_version(schema_source, all_sources),
        global_version=global_version,
        tenant_versions=tenant_versions,
        locations=locations,
        policy_count=len(static),
        tenants=tenants,
        sources=tuple(s.path for s in all_sources),
        entities=directory,
    )


def format_policy_text(text: str) -> str:
    """Cedar's own formatter (comments kept). Raises ``PolicyError`` when the text does not parse, or nests
    too deeply for Cedar to read it safely (``core.cedar_depth``; checked first)."""
    statements = split_statements(text)
    too_deep = depth_diagnostics("", statements)
    if too_deep:
        raise PolicyError(_cannot_format(too_deep[0]))
    try:
        return str(cedarpy.format_policies(text, 100, 2))
    except ValueError as err:
        # Located as `validate` locates it (review finding: only "cannot parse input policies" was said).
        raise PolicyError(_cannot_format(locate_parse_error("", statements, err))) from err


def _cannot_format(problem: PolicyDiagnostic) -> str:
    ident = f" [{problem.policy_id}]" if problem.policy_id else ""
    column = f", column {problem.column}" if problem.column else ""
    return f"cannot format: line {problem.line}{column}:{ident} {problem.message}"


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


def _compile_tenant(tenant: str, files: Sequence[PolicySource], schema: Any, schema_key: str,
                    global_ids: Mapping[str, PolicyLocation],
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
            elif entry.policy_id in locations:
                problem = duplicate_id_message(locations[entry.policy_id])
            if problem:
                diagnostics.append(PolicyDiagnostic(source.path, entry.line, problem, column=entry.column,
                                                    policy_id=entry.policy_id))
                continue
            like_chars += entry.like_chars
            if like_chars > limits.max_like_chars >= like_chars - entry.like_chars:  # the policy crossing it
                diagnostics.append(PolicyDiagnostic(
                    source.path, entry.line, f"the tenant's `like` patterns hold more than "
                    f"policies.max_tenant_like_pattern_chars ({limits.max_like_chars:,}) characters from this policy "
                    "on: Cedar matches a pattern in time proportional to the string's length times the pattern's "
                    "(about 15 ms for 256 characters against a 64 KiB string), holding every tenant's decisions; "
                    "use fewer or shorter patterns, or raise the limit", column=entry.column,
                    policy_id=entry.policy_id))
            locations[entry.policy_id] = PolicyLocation(source.path, entry.line)
            texts.append(entry.text)
            ids.append(entry.policy_id)
    if len(ids) > limits.max_policies:
        diagnostics.append(PolicyDiagnostic(
            f"tenants/{tenant}", 1, f"the tenant has {len(ids):,} policies, more than policies.max_tenant_policies "
            f"({limits.max_policies:,}); Cedar evaluates every one of them on each of its decisions"))
    return TenantPolicies(tenant, "\n".join(texts), tuple(ids), locations)


def _compile_tenant_file(tenant: str, source: PolicySource, schema: Any) -> _TenantFile:
    diagnostics: list[PolicyDiagnostic] = []
    entries: list[_TenantEntry] = []
    seen: dict[str, PolicyLocation] = {}
    for p in _parse_file(source, schema, diagnostics):
        dumped = json.dumps(p.est)
        like_chars, like_subject = like_pattern_chars(p.est)
        problem = tenant_problem(p.est, dumped, tenant) or (
            "templates are not supported in tenant policy files" if p.template else None) or (
            f"`like` applied to a string literal of {like_subject:,} characters (at most {MAX_STRING:,}, as a request "
            "string): matching takes time proportional to its length" if like_subject > MAX_STRING else None)
        if not _admit(p, source, problem, seen, diagnostics):
            continue
        # Every tenant policy carries its id in the text, so results can name it after with_added_str.
        text = p.statement.text if p.annotated else f'@id("{p.policy_id}")\n{p.statement.text}'
        entries.append(_TenantEntry(p.policy_id, text, p.statement.line, p.statement.column, like_chars))
    return _TenantFile(tuple(entries), tuple(diagnostics))


def _compile_entities(entity_sources: Mapping[str, PolicySource], schema: Any, schema_key: str,
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


def _parse_file(source: PolicySource, schema: Any, diagnostics: list[PolicyDiagnostic]) -> list[_Parsed]:
    statements = split_statements(source.text)
    too_deep = depth_diagnostics(source.path, statements)
    if too_deep:  # the file never reaches cedarpy (every later step, error location included, parses it)
        diagnostics.extend(too_deep)
        return []
    try:
        est = json.loads(cedarpy.policies_to_json_str(source.text))
    except ValueError as err:
        diagnostics.append(locate_parse_error(source.path, statements, err))
        return []
    policy_count = sum(len(est.get(kind, {})) for kind in ("staticPolicies", "templates"))
    if policy_count != len(statements):
        # Tenant partitions are built from the statement texts: if our split disagrees with Cedar's parse, a
        # policy Cedar validated could be left out of its partition or merged into another, so refuse.
        diagnostics.append(PolicyDiagnostic(source.path, 1, f"Cedar parses {policy_count} policies here but "
                                            f"TenantGate finds {len(statements)} statements; please report this"))
        return []

    def statement_of(positional_id: str) -> Statement:
        index = int(positional_id.removeprefix("policy")) if POSITIONAL.fullmatch(positional_id) else -1
        return statements[index] if 0 <= index < len(statements) else Statement(1, 1, "")

    parsed: list[_Parsed] = []
    ours: dict[str, str] = {}
    for kind in ("staticPolicies", "templates"):
        for positional_id, policy in est.get(kind, {}).items():
            stmt = statement_of(positional_id)
            annotations = policy.get("annotations", {})
            has_id = "id" in annotations
            annotated = annotations.get("id") or ""
            if has_id and not annotated.strip():
                # An empty @id would otherwise be treated as missing and get a second @id added later.
                diagnostics.append(PolicyDiagnostic(source.path, stmt.line, "@id must not be empty",
                                                    column=stmt.column))
                continue
            policy_id = annotated if has_id else f"{source.path}:{stmt.line}"
            ours[positional_id] = policy_id
            parsed.append(_Parsed(policy_id, policy, stmt, has_id, kind == "templates"))
    result = cedarpy.validate_policies(source.text, schema)
    if not result.validation_passed:
        for error in result.errors:
            stmt = statement_of(error.policy_id)
            policy_id = escape_unprintable(ours.get(error.policy_id, error.policy_id))
            # Cedar names policies by position; say the id the author wrote (or file:line).
            message = escape_unprintable(error.error.replace(f"`{error.policy_id}`", f"`{policy_id}`"))
            diagnostics.append(PolicyDiagnostic(source.path, stmt.line, message, column=stmt.column,
                                                policy_id=policy_id))
    return parsed


def _admit(p: _Parsed, source: PolicySource, problem: str | None, locations: dict[str, PolicyLocation],
           diagnostics: list[PolicyDiagnostic]) -> bool:
    """Common id rules; records the location and returns True when the policy may join its set."""
    line, column = p.statement.line, p.statement.column
    problem = id_problem(p.policy_id, problem)  # core.policy_ids: reserved ids and their look-alikes, ...
    if problem is None and p.policy_id in locations:
        problem = duplicate_id_message(locations[p.policy_id])
    if problem:
        diagnostics.append(PolicyDiagnostic(source.path, line, problem, column=column,
                                            policy_id=escape_unprintable(p.policy_id)))
        return False
    locations[p.policy_id] = PolicyLocation(source.path, line)
    return True


def duplicate_id_message(first: PolicyLocation, what: str = "") -> str:
    """The message for an id used again. Files are read in sorted path order (global files by name, then each
    tenant's directory by tenant and file name), so the diagnostic is on the later occurrence in that order
    and names the earlier one; both are in the output."""
    return (f"duplicate policy id: also defined at {first.path}:{first.line}{what}, which comes first in path "
            "order; rename one of them")
