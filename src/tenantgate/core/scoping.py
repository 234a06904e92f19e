"""What policies may say about tenants, read from a policy's JSON form (Cedar's EST).

Entity ids are unique only within a tenant, so a global policy that names an entity must pin that entity's
tenant; a tenant's own policies may speak only about their own tenant and never about the tenant boundary
or break-glass, which are TenantGate's. Pure functions over the EST; ``compiler`` applies them at load.
"""

from __future__ import annotations

from typing import Any


def global_problem(est: dict[str, Any]) -> str | None:
    """Why a global policy (its EST) may not stand, or None: an entity it names must have its tenant pinned."""
    # A principal or resource named in the scope needs a pin on its own side: in a break-glass decision the
    # two tenants differ, so `principal.tenant == "ops"` says nothing about whose `Invoice::"inv-1"` it is.
    pinned = {side for side, _tenant in _tenant_pins(est.get("conditions", []))}
    for side in ("principal", "resource"):
        named = _entity_literals({side: est.get(side)})
        if named and side not in pinned:
            return _unpinned(named[0], f'`when {{ {side}.tenant == "<tenant>" }}`')
    named = _entity_literals({"conditions": est.get("conditions")})
    if named and not pinned:
        return _unpinned(named[0], '`when { principal.tenant == "<tenant>" }`')
    return None


def _unpinned(entity: str, pin: str) -> str:
    return (f"names {entity} but does not pin a tenant: entity ids are only unique within a tenant, so this "
            f"would apply to a same-named entity in every tenant; add e.g. {pin} (a `when` condition, joined "
            f"to the rest only by `&&`) or move it to policies/tenants/<tenant>/")


def tenant_problem(est: dict[str, Any], dumped: str, tenant: str) -> str | None:
    """A tenant's policy may only speak about its own tenant: it is evaluated only for that tenant's
    resources, and may not touch the tenant boundary itself (the guardrail and break-glass are global).
    ``dumped`` is ``json.dumps(est)`` (attribute accesses only occur in conditions)."""
    conditions = est.get("conditions", [])
    if '"attr": "breakGlass"' in dumped:
        return "tenant policies cannot refer to context.breakGlass (break-glass is decided platform-wide)"
    # The tenant boundary is TenantGate's: a tenant policy may compare `principal.tenant` / `resource.tenant`
    # with its own id (anywhere: it is evaluated only for this tenant's resources), nothing else (another
    # tenant, `principal.tenant == resource.tenant`, the request-controlled `context.tenant`, `has tenant`).
    # Such a policy can tell the tenant's own people from a break-glass operator (`principal.tenant`
    # differs only then), as it can by roles or issuer: it may restrict operators on its own data, never
    # widen their access, since the grant's tenant and actions are checked in code before Cedar.
    uses = dumped.count('"attr": "tenant"')
    if uses and uses != _own_tenant_comparisons(conditions, tenant):
        return (f"tenant policies may use a tenant attribute only as `principal.tenant == \"{tenant}\"` or "
                f"`resource.tenant == \"{tenant}\"`: the tenant boundary is enforced by TenantGate, not by "
                "tenant policies")
    return None


def _entity_literals(policy: dict[str, Any]) -> list[str]:
    """Non-action entity literals a policy (or the parts of it given) names, in its scope or conditions
    (``User::"alice"``, ...)."""
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


def _tenant_pins(conditions: Any) -> list[tuple[str, str]]:
    """What a policy's conditions pin: one ``(side, tenant id)`` per ``principal.tenant == "<id>"`` or
    ``resource.tenant == "<id>"`` comparison (either operand order) that is a conjunct of a ``when``
    clause's top-level ``&&`` chain.

    INVARIANT: only such a comparison restricts where a policy applies. Cedar applies a policy when every
    ``when`` holds and no ``unless`` does, so a comparison under ``unless``, ``||``, ``!`` or ``if`` can be
    bypassed (``unless { principal.tenant == "acme" }`` applies to every *other* tenant), and
    ``context.tenant`` is whatever the request says. Merely reading a tenant (``principal has tenant``)
    pins nothing either.
    """
    pins: list[tuple[str, str]] = []
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, dict) and condition.get("kind") == "when":
            for conjunct in _conjuncts(condition.get("body")):
                pin = _tenant_comparison(conjunct)
                if pin is not None:
                    pins.append(pin)
    return pins


def _own_tenant_comparisons(node: Any, tenant: str) -> int:
    """How many ``principal.tenant`` / ``resource.tenant == "<tenant>"`` comparisons the EST holds, anywhere.

    Iterative: a tenant policy within the depth limits (``core.cedar_depth``: 256 levels, a run of 250 ``&&``)
    nests its EST about 500 dicts deep, past Python's recursion limit with a recursive walk (review finding:
    RecursionError escaped the compiler, and the whole reload was refused instead of the tenant held back)."""
    count = 0
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            compared = _tenant_comparison(node)
            count += compared is not None and compared[1] == tenant
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _conjuncts(node: Any) -> list[Any]:
    """The operands of a top-level ``&&`` chain (the node itself when it is not an ``&&``)."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("&&"), dict):
        return [*_conjuncts(node["&&"].get("left")), *_conjuncts(node["&&"].get("right"))]
    return [node]


def _tenant_comparison(node: Any) -> tuple[str, str] | None:
    """``(side, <id>)`` when the node is ``principal.tenant == "<id>"`` or ``resource.tenant == "<id>"``
    (either operand order; side ``principal`` or ``resource``), else None."""
    eq = node.get("==") if isinstance(node, dict) and len(node) == 1 else None
    if not isinstance(eq, dict):
        return None
    sides = (eq.get("left"), eq.get("right"))
    for attr, value in (sides, sides[::-1]):
        if (isinstance(attr, dict) and isinstance(value, dict) and isinstance(value.get("Value"), str)
                and attr.get(".") in ({"left": {"Var": "principal"}, "attr": "tenant"},
                                      {"left": {"Var": "resource"}, "attr": "tenant"})):
            return str(attr["."]["left"]["Var"]), str(value["Value"])
    return None


def like_pattern_chars(est: dict[str, Any]) -> tuple[int, int]:
    """(characters of every ``like`` pattern in a policy's EST, wildcards included; the longest string literal
    within a ``like``'s left operand, 0 without one).

    Cedar matches a pattern against a string in time proportional to the string's length times the pattern's
    literal runs (about 50 µs per pattern character against a 64 KiB string), holding the GIL; every ``like`` is
    evaluated at most once per decision (Cedar has no loops), and a string reaching one comes from a request or
    entity attribute (at most 64 KiB) or from a literal of its left operand (Cedar has no concatenation). So the
    two bound that work."""
    total = longest = 0
    stack: list[Any] = [est.get("conditions")]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            like = node.get("like")
            if isinstance(like, dict) and isinstance(like.get("pattern"), list):
                total += len(like["pattern"])
                longest = max(longest, _longest_string(like.get("left")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total, longest


def _longest_string(node: Any) -> int:
    longest = 0
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            longest = max(longest, len(node))  # names (attributes, variables) too: never longer than a literal
    return longest
