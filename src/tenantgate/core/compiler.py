"""Compiling policy files into pre-parsed Cedar handles, with per-tenant partitions.

Global policies (``policies/*.cedar``) and the built-in tenant guardrail form one pre-parsed PolicySet.
A tenant's own policies (``policies/tenants/<tenant>/*.cedar``) are kept as validated text and added to
the global set only when that tenant's partition is first needed (``Engine`` caches partitions), so memory
stays bounded with many tenants and Cedar never scans one tenant's policies for another tenant's resources.

Everything is validated strictly against the schema at compile time; any problem is a ``PolicyError`` with
file:line and the policy id, and nothing partial is returned. A policy file is parsed by ``policy_files``, a
tenant's own files and the entity files are compiled by ``tenant_compile``. With ``engine.py``,
``entitycache.py``, ``policy_errors.py`` and ``schema.py`` these are the only code that imports cedarpy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from tenantgate.core.cedar_depth import schema_depth_problem
from tenantgate.core.cedar_text import split_statements
from tenantgate.core.entities import EMPTY_DIRECTORY, EntityDirectory
from tenantgate.core.policy_errors import depth_diagnostics, locate_parse_error, unassembled
from tenantgate.core.policy_files import PolicyLocation, PolicySource, admit, parse_file
from tenantgate.core.request import is_tenant_id
from tenantgate.core.schema import check_principal_shape, check_request_shape
from tenantgate.core.scoping import global_problem
from tenantgate.core.tenant_compile import (  # re-exported: callers import these from the compiler
    DEFAULT_TENANT_LIMITS,
    RELEASE_GIL_BYTES,
    FileCache,
    TenantLimits,
    TenantPolicies,
    compile_entities,
    compile_tenant,
    id_readings,
)
from tenantgate.core.versions import partition_versions, policy_version
from tenantgate.errors import PolicyDiagnostic, PolicyError

__all__ = ["DEFAULT_TENANT_LIMITS", "GUARDRAIL_ID", "GUARDRAIL_TEXT", "RELEASE_GIL_BYTES", "CompiledPolicies",
           "FileCache", "PolicyLocation", "PolicySource", "TenantLimits", "TenantPolicies", "compile_policies",
           "format_policy_text"]

GUARDRAIL_ID = "tenantgate::tenant-guardrail"

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


def compile_policies(schema_source: PolicySource, sources: Sequence[PolicySource],
                     tenant_sources: Mapping[str, Sequence[PolicySource]] | None = None,
                     cache: FileCache | None = None,
                     entity_sources: Mapping[str, PolicySource] | None = None,
                     limits: TenantLimits = DEFAULT_TENANT_LIMITS) -> CompiledPolicies:
    """Parse and strictly validate the schema, the global files and every tenant's files.

    ``entity_sources`` maps a tenant ("" for the global file) to its ``entities.json``; each is checked
    against TenantGate's entity rules and validated against the schema (``core.entity_files``).

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
        for p in parse_file(source, schema, diagnostics):
            problem = global_problem(p.est)
            if admit(p, source, problem, locations, diagnostics):
                (templates if p.template else static)[p.policy_id] = p.est

    tenants: dict[str, TenantPolicies] = {}
    schema_key = hashlib.sha256(schema_source.text.encode("utf-8")).hexdigest()
    used: FileCache = {}
    global_readings = id_readings(locations)
    for tenant, files in sorted(tenant_sources.items()):
        if not is_tenant_id(tenant):
            diagnostics.append(PolicyDiagnostic(f"tenants/{tenant}", 1, "directory name is not a valid tenant id"))
            continue
        tenants[tenant] = compile_tenant(tenant, files, schema, schema_key, locations, global_readings,
                                          diagnostics, cache, used, limits)
    entity_sources = entity_sources or {}
    directory = compile_entities(entity_sources, schema, schema_key, diagnostics, cache, used, limits)
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
