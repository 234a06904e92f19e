"""What TenantGate requires of a Cedar schema, and how it asks Cedar about one.

TenantGate builds the principal entity (``principal_entity``) and puts ``context.intent`` and
``resource.tenant`` on every request; a schema that does not declare them would validate and then fail
every request at evaluation, so they are checked at load, with Cedar's own validator on probe policies
(cedarpy has no schema introspection). The same validator says which action names a schema declares
(``undeclared_actions``: break-glass grants may only name those).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cedarpy

from tenantgate.core.model import Principal
from tenantgate.errors import PolicyDiagnostic, PolicyError

PRINCIPAL_TYPES = ("User", "Agent")


def check_principal_shape(schema: Any, path: str) -> None:
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


# What every request carries (core.request): the context's `intent`, the resource's `tenant`. A schema without
# them validates, then fails every request at evaluation (review finding); a probe policy reading each, for
# every action, principal and resource the schema declares, finds the declarations that lack one.
_REQUEST_PROBES = (
    ('permit(principal, action, resource) when { context.intent == "" };',
     "every action's context must declare `intent: String` (TenantGate sets it to the stated intent)"),
    ('permit(principal, action, resource) when { resource.tenant == "" };',
     "every resource type an action applies to must declare `tenant: String` (TenantGate sets it to the "
     "owning tenant)"),
)


def check_request_shape(schema: Any, path: str) -> None:
    """The schema must declare the attributes TenantGate puts on every request (see ``_REQUEST_PROBES``)."""
    for probe, rule in _REQUEST_PROBES:
        result = cedarpy.validate_policies(probe, schema)
        # Declared optional (`tenant?: String`) is fine: TenantGate always sets it (review finding: such a
        # schema loaded before this check, and decided well).
        found = sorted({error.error.split("`policy0`, ", 1)[-1] for error in result.errors
                        if "optional attribute" not in error.error})
        if found:
            raise PolicyError(f"the schema: {rule}", [PolicyDiagnostic(path, 1, f"{rule}: {item}")
                                                      for item in found])


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


def undeclared_actions(schema: Any, names: Sequence[str]) -> list[str]:
    """Those of ``names`` for which the schema declares no ``Action::"<name>"`` a Check could ask for (not
    declared at all, or applying to no principal and resource type), in the order given."""
    undeclared = []
    for name in names:
        literal = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        probe = f"permit(principal, action == Action::{literal}, resource);"
        if not cedarpy.validate_policies(probe, schema).validation_passed:
            undeclared.append(name)
    return undeclared
