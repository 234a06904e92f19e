"""The Cedar engine: the only importer of cedarpy.

Policies and schema are parsed and validated once into pre-parsed handles (``CompiledPolicies``);
each decision builds a two-entity request (principal, resource) and asks Cedar. The built-in tenant
guardrail is added to every compiled set under a reserved id; policy files can neither remove it nor
override it (a Cedar ``forbid`` always beats a ``permit``).

Only a clean Allow from Cedar is an allow. Deny, NoDecision and any evaluation error are denials:
Cedar skips a policy whose condition errors, so an erroring ``forbid`` would otherwise let a ``permit`` win.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from tenantgate.core.cedar_text import split_statements
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.errors import PolicyDiagnostic, PolicyError

RESERVED_PREFIX = "tenantgate::"
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

_EVAL_ERROR = re.compile(r"error while evaluating policy `([^`]+)`")
PRINCIPAL_TYPES = ("User", "Agent")


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
class CompiledPolicies:
    """Pre-parsed, validated policy set and schema; immutable, safe to share across decisions."""

    policy_set: Any
    schema: Any
    version: str
    locations: Mapping[str, PolicyLocation]
    policy_count: int
    sources: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class EngineOutcome:
    decision: Decision
    reason: Reason
    policy_ids: tuple[str, ...]
    message: str
    errors: tuple[str, ...] = ()


def compile_policies(schema_source: PolicySource, sources: Sequence[PolicySource]) -> CompiledPolicies:
    """Parse and strictly validate the schema and every policy file; return pre-parsed handles.

    Raises ``PolicyError`` listing every problem with file:line and policy id; nothing partial is returned.
    """
    diagnostics: list[PolicyDiagnostic] = []
    try:
        schema = cedarpy.Schema.from_str(schema_source.text)
    except ValueError as err:
        raise PolicyError("invalid schema", [PolicyDiagnostic(schema_source.path, 1, str(err))]) from err
    _check_principal_shape(schema, schema_source.path)

    static: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    locations: dict[str, PolicyLocation] = {}
    for source in sources:
        _compile_file(source, schema, static, templates, locations, diagnostics)
    if diagnostics:
        raise PolicyError(f"{len(diagnostics)} problem(s) in the policy set", diagnostics)

    guard = json.loads(cedarpy.policies_to_json_str(GUARDRAIL_TEXT))["staticPolicies"]
    static[GUARDRAIL_ID] = next(iter(guard.values()))
    locations[GUARDRAIL_ID] = PolicyLocation("<built-in>", 1)
    document = {"staticPolicies": static, "templates": templates, "templateLinks": []}
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as err:  # pragma: no cover - each file parsed fine on its own
        raise PolicyError(f"cannot assemble the policy set: {err}") from err
    return CompiledPolicies(
        policy_set=policy_set,
        schema=schema,
        version=policy_version(schema_source, sources),
        locations=locations,
        policy_count=len(static),
        sources=tuple(s.path for s in sources),
    )


def policy_version(schema_source: PolicySource, sources: Sequence[PolicySource]) -> str:
    """``sha256:<16 hex>`` over the schema and policy texts (and their paths), order-independent."""
    digest = hashlib.sha256()
    for src in [schema_source, *sorted(sources, key=lambda s: s.path)]:
        for part in (src.path, src.text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big") + data)
    return "sha256:" + digest.hexdigest()[:16]


def _compile_file(
    source: PolicySource,
    schema: Any,
    static: dict[str, Any],
    templates: dict[str, Any],
    locations: dict[str, PolicyLocation],
    diagnostics: list[PolicyDiagnostic],
) -> None:
    statements = split_statements(source.text)
    try:
        est = json.loads(cedarpy.policies_to_json_str(source.text))
    except ValueError as err:
        diagnostics.append(_locate_parse_error(source, statements, err))
        return

    def line_of(positional_id: str) -> int:
        index = int(positional_id.removeprefix("policy")) if positional_id.startswith("policy") else -1
        return statements[index].line if 0 <= index < len(statements) else 1

    result = cedarpy.validate_policies(source.text, schema)
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        for error in result.errors:
            diagnostics.append(PolicyDiagnostic(source.path, line_of(error.policy_id), error.error,
                                                policy_id=names.get(error.policy_id, "")))
    for kind, target in (("staticPolicies", static), ("templates", templates)):
        for positional_id, policy in est.get(kind, {}).items():
            line = line_of(positional_id)
            annotated = policy.get("annotations", {}).get("id")
            policy_id = annotated if annotated else f"{source.path}:{line}"
            if policy_id.startswith(RESERVED_PREFIX):
                diagnostics.append(PolicyDiagnostic(source.path, line,
                                                    f"policy ids starting with {RESERVED_PREFIX!r} are reserved",
                                                    policy_id=policy_id))
                continue
            named = _entity_literals(policy)
            if named and not _pins_tenant(policy):
                diagnostics.append(PolicyDiagnostic(
                    source.path, line,
                    f"names {named[0]} but does not pin a tenant: entity ids are only unique within a tenant, so "
                    f"this would apply to a same-named entity in every tenant; add e.g. "
                    f"`when {{ principal.tenant == \"<tenant>\" }}`", policy_id=policy_id))
                continue
            if policy_id in locations:
                first = locations[policy_id]
                diagnostics.append(PolicyDiagnostic(source.path, line,
                                                    f"duplicate policy id (first at {first.path}:{first.line})",
                                                    policy_id=policy_id))
                continue
            target[policy_id] = policy
            locations[policy_id] = PolicyLocation(source.path, line)


def _entity_literals(policy: dict[str, Any]) -> list[str]:
    """Non-action entity literals a policy names, in its scope or conditions (``User::"alice"``, ...)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("entity", "__entity") and isinstance(value, dict) and "type" in value:
                    if str(value["type"]).split("::")[-1] != "Action":
                        found.append(f'{value["type"]}::"{value.get("id", "")}"')
                elif key == "entities" and isinstance(value, list):
                    for item in value:
                        walk({"entity": item})
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: policy.get(k) for k in ("principal", "resource", "conditions")})
    return found


def _pins_tenant(policy: dict[str, Any]) -> bool:
    """True when a condition reads a ``tenant`` attribute (``principal.tenant == "acme"`` and the like)."""
    return '"attr": "tenant"' in json.dumps(policy.get("conditions", []))


def _locate_parse_error(source: PolicySource, statements: Sequence[Any], err: ValueError) -> PolicyDiagnostic:
    for stmt in statements:
        try:
            cedarpy.policies_to_json_str(stmt.text)
        except ValueError as stmt_err:
            return PolicyDiagnostic(source.path, stmt.line, f"parse error: {stmt_err}", column=stmt.column)
    return PolicyDiagnostic(source.path, 1, f"parse error: {err}")


def _check_principal_shape(schema: Any, path: str) -> None:
    """The schema must declare the principal entities TenantGate builds, with the attributes it sets."""
    sample = [principal_entity(Principal(t, "probe", "probe", "probe", ("r",), ("i",), "iss", "tid"))
              for t in PRINCIPAL_TYPES]
    try:
        cedarpy.Entities.from_json_str(json.dumps(sample), schema)
    except ValueError as err:
        raise PolicyError(
            "the schema must declare `entity User { tenant: String, roles: Set<String>, intents: Set<String>, "
            "issuer: String }` and `entity Agent` with the same attributes plus `onBehalfOf: String`",
            [PolicyDiagnostic(path, 1, str(err))],
        ) from err


def principal_entity(principal: Principal) -> dict[str, Any]:
    """The principal as a Cedar entity. Its attributes come only from verified claims."""
    attrs: dict[str, Any] = {
        "tenant": principal.tenant,
        "roles": list(principal.roles),
        "intents": list(principal.intents or ()),
        "issuer": principal.issuer,
    }
    if principal.is_agent:
        attrs["onBehalfOf"] = principal.subject
    return {"uid": {"type": principal.entity_type, "id": principal.entity_id}, "attrs": attrs, "parents": []}


class Engine:
    """Evaluates one request against a compiled policy set. Never raises for bad input: it returns a denial."""

    __slots__ = ("compiled",)

    def __init__(self, compiled: CompiledPolicies) -> None:
        self.compiled = compiled

    @property
    def version(self) -> str:
        return self.compiled.version

    def evaluate(self, principal: Principal, action: str, resource: Resource,
                 resource_attrs: dict[str, Any], context: dict[str, Any]) -> EngineOutcome:
        request = {
            "principal": {"type": principal.entity_type, "id": principal.entity_id},
            "action": {"type": "Action", "id": action},
            "resource": {"type": resource.type, "id": resource.id},
            "context": context,
        }
        entities = [
            principal_entity(principal),
            {"uid": {"type": resource.type, "id": resource.id}, "attrs": resource_attrs, "parents": []},
        ]
        result = cedarpy.is_authorized(request, self.compiled.policy_set, entities, schema=self.compiled.schema)
        return interpret(result.decision.value, tuple(result.diagnostics.reasons),
                         tuple(result.diagnostics.errors))


def interpret(decision: str, reasons: tuple[str, ...], errors: tuple[str, ...]) -> EngineOutcome:
    """Cedar's answer -> ours. The closed rule: only an error-free Allow allows."""
    errored = tuple(dict.fromkeys(m.group(1) for e in errors if (m := _EVAL_ERROR.search(e))))
    match decision, bool(errors):
        case "Allow", False:
            return EngineOutcome(Decision.ALLOW, Reason.ALLOW, reasons, "permitted by policy")
        case "Deny", _ if reasons:
            return EngineOutcome(Decision.DENY, Reason.POLICY_FORBID, reasons, "forbidden by policy", errors)
        case "Deny", False:
            return EngineOutcome(Decision.DENY, Reason.NO_PERMIT, (), "no policy permits this request")
        case "NoDecision", _ if any(e.startswith(("failed to build request", "failed to parse entities"))
                                    for e in errors):
            return EngineOutcome(Decision.DENY, Reason.INVALID_REQUEST, (),
                                 "request does not match the schema: " + _short(errors[0]), errors)
        case _:
            # Allow with errors, Deny without a forbid but with errors, NoDecision: an erroring policy
            # might have forbidden this request, so it is denied (fail closed).
            detail = _short(errors[0]) if errors else f"engine returned {decision}"
            return EngineOutcome(Decision.DENY, Reason.INTERNAL_ERROR, errored,
                                 "policy evaluation error: " + detail, errors)


def _short(message: str, limit: int = 300) -> str:
    # Entity parse errors quote the whole entity JSON (the caller's roles, intents, attribute values) before
    # saying what went wrong: keep only what went wrong.
    if message.startswith("failed to parse entities"):
        _, marker, tail = message.rpartition("]: ")
        message = "entity data: " + (tail if marker else "does not match the schema")
    message = message.replace("\n", " ")
    return message if len(message) <= limit else message[:limit] + "..."
