"""Pure conversions between AuthZEN 1.0 JSON and the model. No decisions are made here.

Payload-level problems raise ``BadRequest`` (HTTP 400). A problem confined to one item of an evaluations
request does not: it becomes that item's ``CheckInput.request_problem``, so the item is still decided (and
audited) as a denial ``invalid_request``, and answered ``decision: false`` with an error in its context.

Mapping (see README, AuthZEN):

* ``subject`` -> the stated subject (``user`` -> Cedar ``User``); ``subject.properties`` are ignored, since
  principal attributes come from the verified token or the tenant's entity data, never from the request;
* ``action.name`` -> the action (``action.properties`` are ignored);
* ``resource`` -> type, id and attributes (``properties``); ``properties.tenant`` names the owning tenant,
  otherwise the resource belongs to the caller's tenant. A ``tenant`` member directly on ``resource`` (where
  gRPC names it) or on ``subject`` is refused, never ignored;
* ``context`` -> the Cedar context, except ``context.intent``, which is the stated intent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenantgate.core.model import CheckInput, DecisionResult, Reason, Resource, StatedSubject, SubjectBinding

API = "authzen"
_OBJECT_MEMBERS = ("subject", "action", "resource", "context")
_TENANT_MEMBER_HINTS = {
    "resource": "the owning tenant is stated as {where}resource.properties.tenant",
    "subject": "the caller's tenant comes from its token (a resource's owning tenant is stated as "
               "{where}resource.properties.tenant)",
}


class BadRequest(Exception):
    """The payload as a whole is malformed: answered 400 with this message, before any decision."""


class Semantic(enum.Enum):
    """``options.evaluations_semantic`` (AuthZEN 1.0, Access Evaluations API, evaluations semantics)."""

    EXECUTE_ALL = "execute_all"
    DENY_ON_FIRST_DENY = "deny_on_first_deny"
    PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"

    def stops_after(self, allowed: bool) -> bool:
        """True when no further item is evaluated after one with this decision (``&&`` / ``||``)."""
        match self:
            case Semantic.EXECUTE_ALL:
                return False
            case Semantic.DENY_ON_FIRST_DENY:
                return not allowed
            case Semantic.PERMIT_ON_FIRST_PERMIT:
                return allowed


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation's members after defaults (not yet validated: ``problem`` says what is wrong, if anything)."""

    subject: Mapping[str, Any]
    action: Mapping[str, Any]
    resource: Mapping[str, Any]
    context: Mapping[str, Any]
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Evaluations:
    """An Access Evaluations request. ``single``: no (or an empty) ``evaluations`` array, so it is answered
    as an Access Evaluation request (AuthZEN 1.0: "behaves in a backwards-compatible manner")."""

    items: tuple[Evaluation, ...]
    semantic: Semantic
    single: bool


def parse_evaluation(body: Any) -> Evaluation:
    """An Access Evaluation request. Raises ``BadRequest`` when a required member is missing or ill-typed
    (AuthZEN 1.0: a missing required attribute is a Bad Request). Unknown members are ignored."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    evaluation = _evaluation(body, {}, "")
    if evaluation.problem:
        raise BadRequest(evaluation.problem)
    return evaluation


def parse_evaluations(body: Any, max_items: int) -> Evaluations:
    """An Access Evaluations request: top-level ``subject``/``action``/``resource``/``context`` are defaults that
    an item's own member replaces (never merges with); ``options.evaluations_semantic`` picks the semantic.

    Raises ``BadRequest`` for payload-level problems: not an object, ``evaluations`` not an array or longer
    than ``max_items``, an item or a default that is not an object, ``options`` not an object, an unknown
    semantic, or (without items) a missing or ill-typed required member. An item whose own member is missing,
    ill-typed or refused (e.g. ``resource.tenant``) is not: it carries that as its ``problem``.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    options = _optional_object(body, "options", "")
    # null is absent, as for every other optional member (review finding: it was a 400).
    semantic_name = options.get("evaluations_semantic")
    semantic_name = Semantic.EXECUTE_ALL.value if semantic_name is None else semantic_name
    try:
        semantic = Semantic(semantic_name)
    except (ValueError, TypeError) as err:
        names = ", ".join(s.value for s in Semantic)
        raise BadRequest(f"options.evaluations_semantic must be one of {names}") from err
    items = body.get("evaluations")
    if items is None or items == []:
        return Evaluations((parse_evaluation(body),), semantic, single=True)
    if not isinstance(items, list):
        raise BadRequest("evaluations must be an array")
    if len(items) > max_items:
        raise BadRequest(f"evaluations holds {len(items)} items; at most {max_items} are accepted")
    defaults = {name: _optional_object(body, name, "") for name in _OBJECT_MEMBERS if body.get(name) is not None}
    evaluations = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"evaluations[{index}] must be an object")
        # An item's ill-typed member (`"resource": "x"`) is that item's problem, like a missing one.
        evaluations.append(_evaluation(item, defaults, f"evaluations[{index}]."))
    return Evaluations(tuple(evaluations), semantic, single=False)


def _evaluation(own: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]], where: str) -> Evaluation:
    # An item's member replaces the default entirely (AuthZEN 1.0, default values).
    members = {name: own[name] if own.get(name) is not None else defaults.get(name) for name in _OBJECT_MEMBERS}
    subject, action, resource = members["subject"], members["action"], members["resource"]
    context = members["context"] if members["context"] is not None else {}
    problem = (_entity_problem(subject, "subject", ("type", "id"), where)
               or _entity_problem(action, "action", ("name",), where)
               or _entity_problem(resource, "resource", ("type", "id"), where)
               or ("" if isinstance(context, dict) else f"{where}context must be an object"))
    if problem:
        # What the item stated is kept for its audit record (check_input), never evaluated.
        return Evaluation(_object(subject), _object(action), _object(resource), {}, problem)
    assert isinstance(subject, dict) and isinstance(action, dict) and isinstance(resource, dict)
    return Evaluation(subject, action, resource, context)


def _entity_problem(value: Any, name: str, required: Sequence[str], where: str) -> str:
    if value is None:
        return f"{where}{name} is required"
    if not isinstance(value, dict):
        return f"{where}{name} must be an object"
    for key in required:
        member = value.get(key)
        if member is None or member == "":
            return f"{where}{name}.{key} is required"
        if not isinstance(member, str):
            return f"{where}{name}.{key} must be a string"
    properties = value.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return f"{where}{name}.properties must be an object"
    if "tenant" in value and name in _TENANT_MEMBER_HINTS:
        # INVARIANT: a tenant where gRPC names it would otherwise be an ignored unknown member, and the
        # resource silently the caller's tenant's: refused, so the caller learns where AuthZEN states it.
        return f"{where}{name}.tenant is not an AuthZEN member: {_TENANT_MEMBER_HINTS[name].format(where=where)}"
    return ""


def _optional_object(body: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    """An optional object member; ``null`` counts as absent (AuthZEN: nulls SHOULD be omitted)."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}{name} must be an object")
    return value


def check_input(evaluation: Evaluation, *, token: str, token_problem: str, binding: SubjectBinding) -> CheckInput:
    """The ``CheckInput`` for one evaluation. The stated subject is bound to the token by ``decide()``."""
    if evaluation.problem:
        # Refused as invalid_request, audited with what it stated (strings only): the resource's tenant too, so a
        # cross-tenant probe in gRPC's shape (resource.tenant) is not recorded as a same-tenant request about
        # nothing (review finding). The caller's tenant only when the item stated no tenant member at all.
        resource = evaluation.resource
        properties = resource.get("properties")
        tenants = (resource.get("tenant"), properties.get("tenant") if isinstance(properties, dict) else None)
        stated = [t for t in tenants if t is not None]
        return CheckInput(token=token, action=_text(evaluation.action.get("name")),
                          resource=Resource(_text(resource.get("type")), _text(resource.get("id")),
                                            next((t for t in stated if isinstance(t, str)), "")),
                          api=API, token_problem=token_problem, request_problem=evaluation.problem,
                          resource_tenant_from_caller=not stated)
    subject, resource = evaluation.subject, evaluation.resource
    properties = dict(resource.get("properties") or {})
    context = dict(evaluation.context)
    problems = []
    owning_tenant = properties.get("tenant", "")
    if not isinstance(owning_tenant, str):
        problems.append("resource.properties.tenant must be a string (a tenant id)")
        owning_tenant = ""
    intent = context.pop("intent", "")
    if not isinstance(intent, str):
        problems.append("context.intent must be a string")
        intent = ""
    return CheckInput(
        token=token,
        action=evaluation.action["name"],
        resource=Resource(type=resource["type"], id=resource["id"], tenant=owning_tenant, attributes=properties),
        intent=intent,
        context=context,
        api=API,
        token_problem=token_problem,
        request_problem="; ".join(problems),
        stated_subject=StatedSubject(principal_type(subject["type"]), subject["id"], binding),
        resource_tenant_from_caller=not owning_tenant and "tenant" not in properties,
    )


def unread_check(token: str, token_problem: str) -> CheckInput:
    """The ``CheckInput`` of a request refused on its token before its body was read: it states nothing, so
    ``decide()`` stops at the token (401) and audits that; should the token pass after all, the request is
    ``invalid_request``, never a decision about something the caller did not ask."""
    return CheckInput(token=token, action="", resource=Resource("", "", ""), api=API, token_problem=token_problem,
                      request_problem="the request was refused on its token before its body was read",
                      resource_tenant_from_caller=True)


def principal_type(subject_type: str) -> str:
    """AuthZEN's ``user`` is the Cedar principal type ``User``; any other type is passed on (and refused)."""
    return "User" if subject_type.lower() == "user" else subject_type


def bearer_from_headers(values: Sequence[str]) -> tuple[str, str]:
    """``(token, problem)`` from the ``Authorization`` header values. Two headers, or a scheme other than
    ``Bearer``, are problems (ambiguous credentials have been a bypass class in proxies); none is ``("", "")``."""
    if not values:
        return "", ""
    if len(values) > 1:
        return "", "more than one Authorization header"
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "", "the Authorization header must be 'Bearer <token>'"
    return token.strip(), ""


# ------------------------------------------------------------------------------------------ answers


def _unauthenticated(reason: Reason) -> bool:
    return reason.value.startswith("token_") or reason in (Reason.ISSUER_UNTRUSTED, Reason.AUDIENCE_MISMATCH)


def http_status(reason: Reason) -> int:
    """The HTTP status a decision is answered with on its own: 401 when the caller is not authenticated,
    403 when it may not ask this (its token has no tenant, a stated subject that is not its own, no PEP
    role), else 200: every other denial is a decision (``decision: false``), never an error."""
    if _unauthenticated(reason):
        return 401
    if reason in (Reason.TENANT_CLAIM_MISSING, Reason.SUBJECT_MISMATCH, Reason.PEP_ROLE_MISSING):
        return 403
    return 200


def caller_refused(reason: Reason) -> bool:
    """True when the reason concerns the caller's token alone, so it holds for every item of a request:
    the whole evaluations request is then answered with ``http_status(reason)``."""
    return _unauthenticated(reason) or reason in (Reason.TENANT_CLAIM_MISSING, Reason.PEP_ROLE_MISSING)


def decision_body(result: DecisionResult, *, item_error: bool = False) -> dict[str, Any]:
    """A Decision: ``decision`` and a ``context`` with our decision id and reason code (and, for a denial,
    the message as ``reason_admin``). ``item_error``: the item of an evaluations request could not be
    evaluated as asked; its context also carries ``error`` with the HTTP status it would have had alone."""
    context: dict[str, Any] = {"decision_id": result.decision_id, "reason": result.reason.value}
    if result.policy_ids:
        context["policy_ids"] = list(result.policy_ids)
    if not result.allowed:
        context["reason_admin"] = {"en": result.message}
        status = http_status(result.reason)
        if item_error or status != 200:
            context["error"] = {"status": status if status != 200 else 400, "message": result.message}
    return {"decision": result.allowed, "context": context}


def configuration(base_url: str) -> dict[str, str]:
    """The PDP metadata (AuthZEN 1.0, Policy Decision Point Metadata); search endpoints are not offered."""
    return {
        "policy_decision_point": base_url,
        "access_evaluation_endpoint": f"{base_url}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base_url}/access/v1/evaluations",
    }


def _text(value: Any) -> str:
    """A stated member for an audit record: a string as it is (the record clips it), anything else ""."""
    return value if isinstance(value, str) else ""


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
